//! The V4L2 camera source, and the reconnect logic that keeps a board running when the
//! camera disappears (a loose USB cable, a driver reset).
//!
//! [`CameraSource`] is generic over a [`CameraOpener`] so the reconnect behaviour is tested
//! with a scripted camera; [`open_camera`] plugs in the real V4L2 device ([`V4l2Opener`]).
//! The first open must succeed (a missing camera at start is a configuration error, reported
//! with the fix); after that, failures are counted and retried with exponential backoff.

use std::time::Duration;

use firmware_config::config::{CameraConfig, CameraPixelFormat};

use super::negotiate::CameraMode;
use super::{Frame, FrameSource, SourceCounters, StopToken, bad_frame, mjpeg, yuyv};
use crate::Error;

/// What to do when a camera is missing at start.
pub const NO_CAMERA_HINT: &str = "check that a UVC camera is plugged in (`ls /dev/video*`, \
    `v4l2-ctl --list-devices`), that this user may open it (the `video` group), and that \
    camera.device in the device config names it; without a camera use --source synthetic or \
    --source PATH (an image or a folder)";

/// A camera error with [`NO_CAMERA_HINT`] appended.
pub fn camera_error(device: &str, reason: impl std::fmt::Display) -> Error {
    Error::Camera {
        device: device.to_string(),
        reason: format!("{reason}; {NO_CAMERA_HINT}"),
    }
}

/// Exponential backoff between reconnect attempts, capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per failed attempt.
    pub factor: f32,
    /// Consecutive read timeouts after which a silent camera counts as gone.
    pub stall_timeouts: u32,
    current: Option<Duration>,
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s; a camera silent for 5 one-second reads is reopened.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5), 2.0)
    }
}

impl Backoff {
    /// A backoff from `initial`, multiplied by `factor` after each failure, at most `max`.
    pub fn new(initial: Duration, max: Duration, factor: f32) -> Self {
        Self {
            initial,
            max,
            factor: factor.max(1.0),
            stall_timeouts: 5,
            current: None,
        }
    }

    /// The delay before the next attempt (grows each call until [`Backoff::reset`]).
    pub fn next_delay(&mut self) -> Duration {
        let next = match self.current {
            None => self.initial,
            Some(d) => d.mul_f32(self.factor),
        }
        .min(self.max);
        self.current = Some(next);
        next
    }

    /// Back to the initial delay (after a successful open).
    pub fn reset(&mut self) {
        self.current = None;
    }
}

/// One raw frame as the camera delivered it.
#[derive(Debug)]
pub struct RawFrame<'a> {
    /// The bytes the driver filled (`bytesused`).
    pub bytes: &'a [u8],
}

/// An open, streaming camera.
pub trait RawCamera: Send {
    /// The negotiated mode.
    fn mode(&self) -> CameraMode;
    /// Bytes per line of uncompressed frames (YUYV).
    fn stride(&self) -> usize;
    /// Waits for the next frame; `ErrorKind::TimedOut` when none came within the read
    /// timeout, any other error when the camera failed.
    fn read(&mut self) -> std::io::Result<RawFrame<'_>>;
}

/// Opens a camera (again).
pub trait CameraOpener: Send {
    /// The camera type.
    type Camera: RawCamera;
    /// Opens and configures the camera and starts streaming.
    fn open(&mut self) -> Result<Self::Camera, Error>;
    /// The device's name for messages.
    fn device(&self) -> &str;
}

/// A camera as a frame source: decodes YUYV/MJPEG to RGB, skips (and counts) frames that do
/// not decode, and reopens a camera that fails, with backoff.
pub struct CameraSource<O: CameraOpener> {
    opener: O,
    camera: Option<O::Camera>,
    mode: CameraMode,
    backoff: Backoff,
    timeouts: u32,
    seq: u64,
    counters: SourceCounters,
    rgb: Vec<u8>,
}

impl<O: CameraOpener> std::fmt::Debug for CameraSource<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("device", &self.opener.device())
            .field("mode", &self.mode)
            .field("counters", &self.counters)
            .finish()
    }
}

impl<O: CameraOpener> CameraSource<O> {
    /// Opens the camera once (an error here is returned, not retried).
    pub fn new(mut opener: O, backoff: Backoff) -> Result<Self, Error> {
        let camera = opener.open()?;
        Ok(Self {
            mode: camera.mode(),
            opener,
            camera: Some(camera),
            backoff,
            timeouts: 0,
            seq: 0,
            counters: SourceCounters::default(),
            rgb: Vec::new(),
        })
    }

    /// The negotiated mode (of the latest successful open).
    pub fn mode(&self) -> CameraMode {
        self.mode
    }

    fn lost(&mut self, why: String) {
        self.camera = None;
        self.timeouts = 0;
        self.counters.disconnects += 1;
        self.counters.last_problem = Some(why);
    }
}

impl<O: CameraOpener> FrameSource for CameraSource<O> {
    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, Error> {
        loop {
            if stop.is_stopped() {
                return Ok(None);
            }
            let Some(camera) = self.camera.as_mut() else {
                if !stop.sleep(self.backoff.next_delay()) {
                    return Ok(None);
                }
                match self.opener.open() {
                    Ok(camera) => {
                        self.mode = camera.mode();
                        self.camera = Some(camera);
                        self.backoff.reset();
                        self.counters.reconnects += 1;
                    }
                    Err(e) => {
                        self.counters.failed_reopens += 1;
                        self.counters.last_problem = Some(e.to_string());
                    }
                }
                continue;
            };
            let mode = camera.mode();
            let stride = camera.stride();
            let raw = match camera.read() {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    self.timeouts += 1;
                    if self.timeouts >= self.backoff.stall_timeouts {
                        let why = format!(
                            "camera {} sent no frame in {} reads; reopening it",
                            self.opener.device(),
                            self.timeouts
                        );
                        self.lost(why);
                    }
                    continue;
                }
                Err(e) => {
                    let why = format!("camera {} failed: {e}; reopening it", self.opener.device());
                    self.lost(why);
                    continue;
                }
            };
            self.timeouts = 0;
            let decoded = match mode.format {
                CameraPixelFormat::Mjpeg => {
                    mjpeg::decode_mjpeg(raw.bytes, &mut self.rgb).and_then(|(w, h)| {
                        if (w, h) == (mode.width, mode.height) {
                            Ok(())
                        } else {
                            Err(bad_frame(
                                "MJPEG",
                                w,
                                h,
                                format!(
                                    "the stream was negotiated at {}x{}",
                                    mode.width, mode.height
                                ),
                            ))
                        }
                    })
                }
                _ => yuyv::yuyv_to_rgb(raw.bytes, mode.width, mode.height, stride, &mut self.rgb),
            };
            if let Err(e) = decoded {
                self.counters.skipped += 1;
                self.counters.last_problem = Some(e.to_string());
                continue;
            }
            // The frame takes the buffer; the next decode allocates a fresh one.
            let rgb = std::mem::take(&mut self.rgb);
            let frame = Frame::new(self.seq, mode.width, mode.height, rgb)?;
            self.seq += 1;
            self.counters.frames += 1;
            return Ok(Some(frame));
        }
    }

    fn is_live(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        let m = self.mode;
        let fps = m.fps.map_or(String::new(), |f| format!("@{f}"));
        format!(
            "camera {} {:?} {}x{}{fps}",
            self.opener.device(),
            m.format,
            m.width,
            m.height
        )
    }

    fn counters(&self) -> SourceCounters {
        self.counters.clone()
    }
}

/// Opens the configured V4L2 camera as a frame source.
#[cfg(target_os = "linux")]
pub fn open_camera(
    config: &CameraConfig,
    backoff: Backoff,
) -> Result<CameraSource<v4l2::V4l2Opener>, Error> {
    CameraSource::new(v4l2::V4l2Opener::new(config.clone()), backoff)
}

/// Cameras need V4L2 (Linux); elsewhere opening one is an error with the alternatives.
#[cfg(not(target_os = "linux"))]
pub fn open_camera(
    config: &CameraConfig,
    _backoff: Backoff,
) -> Result<CameraSource<Unsupported>, Error> {
    Err(camera_error(
        &config.device,
        "V4L2 cameras are only supported on Linux",
    ))
}

/// The camera opener on systems without V4L2 (uninhabited: never built).
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub enum Unsupported {}

#[cfg(not(target_os = "linux"))]
impl CameraOpener for Unsupported {
    type Camera = Unsupported;
    fn open(&mut self) -> Result<Self::Camera, Error> {
        match *self {}
    }
    fn device(&self) -> &str {
        match *self {}
    }
}

#[cfg(not(target_os = "linux"))]
impl RawCamera for Unsupported {
    fn mode(&self) -> CameraMode {
        match *self {}
    }
    fn stride(&self) -> usize {
        match *self {}
    }
    fn read(&mut self) -> std::io::Result<RawFrame<'_>> {
        match *self {}
    }
}

#[cfg(target_os = "linux")]
pub use v4l2::{V4l2Camera, V4l2Opener};

#[cfg(target_os = "linux")]
mod v4l2 {
    use std::path::Path;
    use std::time::Duration;

    use firmware_config::config::CameraConfig;
    use v4l::buffer::Type;
    use v4l::capability::Flags;
    use v4l::frameinterval::FrameIntervalEnum;
    use v4l::framesize::FrameSizeEnum;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::video::capture::Parameters;
    use v4l::{Device, Format, FourCC, Fraction};

    use super::super::negotiate::{
        CameraMode, FormatOffer, FpsRange, SizeOffer, format_of, fourcc, negotiate, snap_stepwise,
    };
    use super::{CameraOpener, RawCamera, RawFrame, camera_error};
    use crate::Error;

    /// Driver buffers: two is the fewest that streams without stalls, and the fewest that
    /// can hold stale frames.
    const BUFFERS: u32 = 2;
    /// Read timeout, so a stalled camera is noticed and a stop request is seen.
    const READ_TIMEOUT: Duration = Duration::from_secs(1);

    /// Opens `config.device` and negotiates the configured mode.
    #[derive(Debug)]
    pub struct V4l2Opener {
        config: CameraConfig,
    }

    impl V4l2Opener {
        /// An opener for this configuration (nothing is opened yet).
        pub fn new(config: CameraConfig) -> Self {
            Self { config }
        }
    }

    /// A streaming V4L2 capture device (mmap buffers).
    pub struct V4l2Camera {
        // Declared before `_device` so the stream stops before the device closes.
        stream: Option<Stream<'static>>,
        _device: Device,
        mode: CameraMode,
        stride: usize,
    }

    impl std::fmt::Debug for V4l2Camera {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("V4l2Camera")
                .field("mode", &self.mode)
                .finish()
        }
    }

    impl Drop for V4l2Camera {
        fn drop(&mut self) {
            // v4l's Stream panics in drop when STREAMOFF fails with anything but ENODEV, which
            // an unplugged camera can cause: a vanished camera must not take the board down.
            if let Some(stream) = self.stream.take() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(stream)));
            }
        }
    }

    impl RawCamera for V4l2Camera {
        fn mode(&self) -> CameraMode {
            self.mode
        }

        fn stride(&self) -> usize {
            self.stride
        }

        fn read(&mut self) -> std::io::Result<RawFrame<'_>> {
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| std::io::Error::other("the stream is closed"))?;
            let (buf, meta) = CaptureStream::next(stream)?;
            let used = (meta.bytesused as usize).min(buf.len());
            // Some drivers report 0 for uncompressed formats: the whole buffer is the frame.
            let used = if used == 0 { buf.len() } else { used };
            Ok(RawFrame {
                bytes: &buf[..used],
            })
        }
    }

    impl CameraOpener for V4l2Opener {
        type Camera = V4l2Camera;

        fn device(&self) -> &str {
            &self.config.device
        }

        fn open(&mut self) -> Result<V4l2Camera, Error> {
            let path = self.config.device.clone();
            let camera_err = |reason: String| camera_error(&path, reason);
            if !Path::new(&path).exists() {
                return Err(camera_err("no such device".into()));
            }
            let device = Device::with_path(&path)
                .map_err(|e| camera_err(format!("cannot be opened: {e}")))?;
            let caps = device
                .query_caps()
                .map_err(|e| camera_err(format!("is not a V4L2 device: {e}")))?;
            if !caps
                .capabilities
                .contains(Flags::VIDEO_CAPTURE | Flags::STREAMING)
            {
                return Err(camera_err(format!(
                    "{} ({}) cannot stream video capture (capabilities: {})",
                    caps.card, caps.driver, caps.capabilities
                )));
            }
            let offers = enumerate(&device, &self.config)
                .map_err(|e| camera_err(format!("listing its formats failed: {e}")))?;
            let mode = negotiate(&self.config, &offers).map_err(|reason| Error::Camera {
                device: path.clone(),
                reason,
            })?;
            let code = fourcc(mode.format).expect("negotiate only picks decodable formats");
            let set = device
                .set_format(&Format::new(mode.width, mode.height, FourCC::new(&code)))
                .map_err(|e| camera_err(format!("setting {mode:?} failed: {e}")))?;
            if set.fourcc != FourCC::new(&code) {
                return Err(Error::Camera {
                    device: path,
                    reason: format!(
                        "asked for {} but the driver chose {}",
                        FourCC::new(&code),
                        set.fourcc
                    ),
                });
            }
            let mode = CameraMode {
                width: set.width,
                height: set.height,
                ..mode
            };
            if let Some(fps) = mode.fps {
                // Frame interval as a fraction in milliseconds-per-frame units keeps 7.5 fps.
                let interval = Fraction::new(1000, (fps * 1000.0).round().max(1.0) as u32);
                // Some drivers have no frame-rate control; their default rate is then used.
                let _ = device.set_params(&Parameters::new(interval));
            }
            let mut stream = Stream::with_buffers(&device, Type::VideoCapture, BUFFERS)
                .map_err(|e| camera_err(format!("mapping capture buffers failed: {e}")))?;
            stream.set_timeout(READ_TIMEOUT);
            Ok(V4l2Camera {
                stream: Some(stream),
                _device: device,
                mode,
                stride: (set.stride as usize).max(set.width as usize * 2),
            })
        }
    }

    /// What the device offers, for the formats this build decodes (sizes near the request).
    fn enumerate(device: &Device, config: &CameraConfig) -> std::io::Result<Vec<FormatOffer>> {
        let mut offers = Vec::new();
        for desc in device.enum_formats()? {
            let code = desc.fourcc.repr;
            if format_of(code).is_none() {
                offers.push(FormatOffer {
                    fourcc: code,
                    sizes: Vec::new(),
                });
                continue;
            }
            let mut sizes = Vec::new();
            for size in device.enum_framesizes(desc.fourcc)? {
                let (width, height) = match size.size {
                    FrameSizeEnum::Discrete(d) => (d.width, d.height),
                    FrameSizeEnum::Stepwise(s) => (
                        snap_stepwise(config.width, s.min_width, s.max_width, s.step_width),
                        snap_stepwise(config.height, s.min_height, s.max_height, s.step_height),
                    ),
                };
                let fps = device
                    .enum_frameintervals(desc.fourcc, width, height)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| match i.interval {
                        FrameIntervalEnum::Discrete(f) => rate(f).map(FpsRange::exactly),
                        // The longest interval is the lowest rate.
                        FrameIntervalEnum::Stepwise(s) => Some(FpsRange {
                            min: rate(s.max)?,
                            max: rate(s.min)?,
                        }),
                    })
                    .collect();
                sizes.push(SizeOffer { width, height, fps });
            }
            offers.push(FormatOffer {
                fourcc: code,
                sizes,
            });
        }
        Ok(offers)
    }

    /// Frames per second of a frame interval (seconds per frame as a fraction).
    fn rate(interval: Fraction) -> Option<f32> {
        (interval.numerator > 0).then(|| interval.denominator as f32 / interval.numerator as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// What the scripted camera does on each read.
    #[derive(Debug, Clone)]
    enum Step {
        Frame(Vec<u8>),
        Timeout,
        Fail,
    }

    struct FakeCamera {
        mode: CameraMode,
        steps: Arc<Mutex<VecDeque<Step>>>,
        current: Vec<u8>,
    }

    impl RawCamera for FakeCamera {
        fn mode(&self) -> CameraMode {
            self.mode
        }
        fn stride(&self) -> usize {
            self.mode.width as usize * 2
        }
        fn read(&mut self) -> std::io::Result<RawFrame<'_>> {
            let step = self.steps.lock().unwrap().pop_front();
            match step {
                Some(Step::Frame(bytes)) => {
                    self.current = bytes;
                    Ok(RawFrame {
                        bytes: &self.current,
                    })
                }
                Some(Step::Timeout) => Err(std::io::ErrorKind::TimedOut.into()),
                // ENODEV, as an unplugged UVC camera reports.
                Some(Step::Fail) | None => Err(std::io::Error::from_raw_os_error(19)),
            }
        }
    }

    /// Opens succeed or fail as scripted; every camera shares one script of reads.
    struct FakeOpener {
        opens: VecDeque<bool>,
        steps: Arc<Mutex<VecDeque<Step>>>,
        mode: CameraMode,
        attempts: Arc<Mutex<Vec<Instant>>>,
    }

    impl CameraOpener for FakeOpener {
        type Camera = FakeCamera;
        fn open(&mut self) -> Result<FakeCamera, Error> {
            self.attempts.lock().unwrap().push(Instant::now());
            if self.opens.pop_front().unwrap_or(false) {
                Ok(FakeCamera {
                    mode: self.mode,
                    steps: Arc::clone(&self.steps),
                    current: Vec::new(),
                })
            } else {
                Err(camera_error("/dev/video9", "no such device"))
            }
        }
        fn device(&self) -> &str {
            "/dev/video9"
        }
    }

    const GREY: [u8; 8] = [128, 128, 128, 128, 128, 128, 128, 128];

    fn yuyv_mode() -> CameraMode {
        CameraMode {
            format: CameraPixelFormat::Yuyv,
            width: 2,
            height: 2,
            fps: Some(30.0),
        }
    }

    fn fake(
        opens: &[bool],
        steps: Vec<Step>,
        mode: CameraMode,
    ) -> (FakeOpener, Arc<Mutex<Vec<Instant>>>) {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let opener = FakeOpener {
            opens: opens.iter().copied().collect(),
            steps: Arc::new(Mutex::new(steps.into())),
            mode,
            attempts: Arc::clone(&attempts),
        };
        (opener, attempts)
    }

    fn fast_backoff() -> Backoff {
        Backoff::new(Duration::from_millis(10), Duration::from_millis(40), 2.0)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 2.0);
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn a_missing_camera_at_start_is_an_error_with_the_fix() {
        let (opener, _) = fake(&[false], vec![], yuyv_mode());
        let err = CameraSource::new(opener, fast_backoff()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/dev/video9") && text.contains("--source synthetic"),
            "{text}"
        );
    }

    #[test]
    fn an_unplugged_camera_is_reopened_with_backoff_and_counted() {
        let steps = vec![
            Step::Frame(GREY.to_vec()),
            Step::Fail,
            Step::Frame(GREY.to_vec()),
        ];
        // Opens: first ok, then two failures, then ok again.
        let (opener, attempts) = fake(&[true, false, false, true], steps, yuyv_mode());
        let mut source = CameraSource::new(opener, fast_backoff()).unwrap();
        let stop = StopToken::new();
        assert_eq!(source.next_frame(&stop).unwrap().unwrap().seq, 0);
        let second = source.next_frame(&stop).unwrap().unwrap();
        assert_eq!(second.seq, 1);
        // Limited-range Y = 128 is RGB 130.
        assert_eq!(second.image.pixels, vec![130; 12]);
        let c = source.counters();
        assert_eq!((c.disconnects, c.failed_reopens, c.reconnects), (1, 2, 1));
        assert_eq!(c.frames, 2);
        // Waits of 10, 20 and 40 ms before the three reopen attempts.
        let at = attempts.lock().unwrap().clone();
        assert_eq!(at.len(), 4);
        assert!(at[2] - at[1] >= Duration::from_millis(20));
        assert!(at[3] - at[2] >= Duration::from_millis(40));
    }

    #[test]
    fn a_silent_camera_is_reopened_and_stop_ends_the_retries() {
        let steps = vec![Step::Timeout, Step::Timeout, Step::Frame(GREY.to_vec())];
        let mut backoff = fast_backoff();
        backoff.stall_timeouts = 2;
        let (opener, _) = fake(&[true, true], steps, yuyv_mode());
        let mut source = CameraSource::new(opener, backoff).unwrap();
        let stop = StopToken::new();
        assert!(source.next_frame(&stop).unwrap().is_some());
        assert_eq!(source.counters().disconnects, 1);
        assert!(source.counters().last_problem.unwrap().contains("no frame"));
        // Now every read fails and every reopen fails: only stop ends the wait.
        let stopper = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stopper.stop();
        });
        assert!(source.next_frame(&stop).unwrap().is_none());
        t.join().unwrap();
        assert!(source.counters().failed_reopens >= 1);
    }

    #[test]
    fn corrupt_frames_are_skipped_and_counted() {
        // A short YUYV frame, then a good one.
        let steps = vec![Step::Frame(vec![1, 2, 3]), Step::Frame(GREY.to_vec())];
        let (opener, _) = fake(&[true], steps, yuyv_mode());
        let mut source = CameraSource::new(opener, fast_backoff()).unwrap();
        let frame = source.next_frame(&StopToken::new()).unwrap().unwrap();
        assert_eq!(frame.seq, 0);
        let c = source.counters();
        assert_eq!(c.skipped, 1);
        assert!(c.last_problem.unwrap().contains("truncated"));
    }

    #[test]
    fn mjpeg_frames_are_decoded_and_checked_against_the_mode() {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&image::RgbImage::from_pixel(
                16,
                8,
                image::Rgb([200, 40, 40]),
            ))
            .unwrap();
        let mode = CameraMode {
            format: CameraPixelFormat::Mjpeg,
            width: 16,
            height: 8,
            fps: None,
        };
        let mut wrong = mode;
        wrong.width = 32;
        let (opener, _) = fake(&[true], vec![Step::Frame(jpeg.clone())], mode);
        let mut source = CameraSource::new(opener, fast_backoff()).unwrap();
        let frame = source.next_frame(&StopToken::new()).unwrap().unwrap();
        assert_eq!((frame.image.width, frame.image.height), (16, 8));
        assert!(frame.image.pixels[0] > 150 && frame.image.pixels[1] < 90);
        assert!(source.describe().contains("Mjpeg 16x8"));
        let (opener, _) = fake(&[true], vec![Step::Frame(jpeg), Step::Fail], wrong);
        let mut source = CameraSource::new(opener, fast_backoff()).unwrap();
        let stop = StopToken::new();
        let stopper = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stopper.stop();
        });
        assert!(source.next_frame(&stop).unwrap().is_none());
        t.join().unwrap();
        assert_eq!(source.counters().skipped, 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn opening_a_missing_device_names_it_and_the_fix() {
        let mut config = CameraConfig::default();
        config.device = "/dev/video-does-not-exist".into();
        let err = open_camera(&config, Backoff::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/dev/video-does-not-exist"), "{text}");
        assert!(text.contains("plugged in"), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn opening_a_file_that_is_not_a_camera_is_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut config = CameraConfig::default();
        config.device = file.path().to_string_lossy().into_owned();
        let err = open_camera(&config, Backoff::default()).unwrap_err();
        assert!(err.to_string().contains("not a V4L2 device"), "{err}");
    }
}
