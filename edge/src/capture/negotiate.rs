//! Choosing a camera mode (pixel format, size, frame rate) from what the camera offers.
//!
//! Pure: the V4L2 code enumerates the camera into [`FormatOffer`]s and calls [`negotiate`],
//! so the choice is tested without hardware.
//!
//! Rule: walk the configured formats in order of preference and take the first that offers
//! the requested size at (at least) the requested frame rate. If none does (a webcam often
//! gives full HD only as MJPEG, or YUYV only at 5 fps), take the mode closest to the request:
//! nearest size first, then the smallest frame-rate shortfall, then preference order.

use firmware_config::config::{CameraConfig, CameraPixelFormat};

/// The V4L2 four-character code of a pixel format (`None`: a format this build cannot
/// decode, from a newer contract).
pub fn fourcc(format: CameraPixelFormat) -> Option<[u8; 4]> {
    match format {
        CameraPixelFormat::Yuyv => Some(*b"YUYV"),
        CameraPixelFormat::Mjpeg => Some(*b"MJPG"),
        _ => None,
    }
}

/// The pixel format of a V4L2 four-character code, if this build decodes it.
pub fn format_of(code: [u8; 4]) -> Option<CameraPixelFormat> {
    match &code {
        b"YUYV" => Some(CameraPixelFormat::Yuyv),
        b"MJPG" => Some(CameraPixelFormat::Mjpeg),
        _ => None,
    }
}

/// Frame rates a camera offers for one size: a single rate (`min == max`) or a range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FpsRange {
    /// Lowest rate, frames per second.
    pub min: f32,
    /// Highest rate.
    pub max: f32,
}

impl FpsRange {
    /// One discrete rate.
    pub fn exactly(fps: f32) -> Self {
        Self { min: fps, max: fps }
    }
}

/// One frame size and its frame rates (empty: the driver did not say; assumed to fit).
#[derive(Debug, Clone, PartialEq)]
pub struct SizeOffer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rates at this size.
    pub fps: Vec<FpsRange>,
}

/// The sizes one pixel format is offered at.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatOffer {
    /// The format's four-character code (also those this build cannot decode, for messages).
    pub fourcc: [u8; 4],
    /// Sizes.
    pub sizes: Vec<SizeOffer>,
}

/// The chosen mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraMode {
    /// Pixel format.
    pub format: CameraPixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate to ask for (`None`: the driver gave no rates; leave its default).
    pub fps: Option<f32>,
}

/// A stepwise size range's member nearest to `want` (V4L2 `STEPWISE`/`CONTINUOUS` sizes).
pub fn snap_stepwise(want: u32, min: u32, max: u32, step: u32) -> u32 {
    let clamped = want.clamp(min, max.max(min));
    if step <= 1 {
        return clamped;
    }
    let below = min + (clamped - min) / step * step;
    let above = (below + step).min(max);
    if above > below && above - clamped < clamped - below {
        above
    } else {
        below
    }
}

/// Picks the mode for `config` among `offers` (see the module doc for the rule).
/// The error text lists what the camera offers.
pub fn negotiate(config: &CameraConfig, offers: &[FormatOffer]) -> Result<CameraMode, String> {
    let want_fps = config.fps as f32;
    // (size distance, fps shortfall, preference index, mode)
    let mut best: Option<((u64, f32, usize), CameraMode)> = None;
    for (rank, &format) in config.pixel_formats.iter().enumerate() {
        let Some(code) = fourcc(format) else {
            continue;
        };
        for offer in offers.iter().filter(|o| o.fourcc == code) {
            for size in &offer.sizes {
                let distance = u64::from(size.width.abs_diff(config.width))
                    + u64::from(size.height.abs_diff(config.height));
                let fps = pick_fps(&size.fps, want_fps);
                let shortfall = fps.map_or(0.0, |f| (want_fps - f).max(0.0));
                let mode = CameraMode {
                    format,
                    width: size.width,
                    height: size.height,
                    fps,
                };
                if distance == 0 && shortfall < 0.01 {
                    // Preference order is the outer loop: the first exact fit wins.
                    return Ok(mode);
                }
                let key = (distance, shortfall, rank);
                let better = best.as_ref().is_none_or(|(k, m)| {
                    key.0 < k.0
                        || (key.0 == k.0 && key.1 < k.1)
                        || (key.0 == k.0 && key.1 == k.1 && key.2 < k.2)
                        || (key == *k && size.width * size.height > m.width * m.height)
                });
                if better {
                    best = Some((key, mode));
                }
            }
        }
    }
    best.map(|(_, mode)| mode).ok_or_else(|| {
        let offered: Vec<String> = offers
            .iter()
            .map(|o| String::from_utf8_lossy(&o.fourcc).into_owned())
            .collect();
        let wanted: Vec<String> = config
            .pixel_formats
            .iter()
            .map(|&f| {
                fourcc(f).map_or(format!("{f:?}"), |c| {
                    String::from_utf8_lossy(&c).into_owned()
                })
            })
            .collect();
        format!(
            "the camera offers [{}] but the configuration accepts [{}] \
             (camera.pixel_formats; this build decodes YUYV and MJPG)",
            offered.join(", "),
            wanted.join(", ")
        )
    })
}

/// The offered rate closest to `want` (ties: the higher), or `None` when none is listed.
fn pick_fps(ranges: &[FpsRange], want: f32) -> Option<f32> {
    ranges
        .iter()
        .map(|r| want.clamp(r.min, r.max.max(r.min)))
        .min_by(|a, b| {
            let (da, db) = ((a - want).abs(), (b - want).abs());
            da.total_cmp(&db).then(b.total_cmp(a))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(width: u32, height: u32, fps: u32, formats: &[CameraPixelFormat]) -> CameraConfig {
        let mut c = CameraConfig::default();
        c.width = width;
        c.height = height;
        c.fps = fps;
        c.pixel_formats = formats.to_vec();
        c
    }

    fn size(width: u32, height: u32, fps: &[f32]) -> SizeOffer {
        SizeOffer {
            width,
            height,
            fps: fps.iter().map(|&f| FpsRange::exactly(f)).collect(),
        }
    }

    /// A typical UVC webcam: YUYV is slow at large sizes, MJPEG is fast everywhere.
    fn webcam() -> Vec<FormatOffer> {
        vec![
            FormatOffer {
                fourcc: *b"YUYV",
                sizes: vec![size(640, 480, &[30.0, 15.0]), size(1280, 720, &[10.0, 5.0])],
            },
            FormatOffer {
                fourcc: *b"MJPG",
                sizes: vec![size(640, 480, &[30.0]), size(1280, 720, &[30.0])],
            },
        ]
    }

    use CameraPixelFormat::{Mjpeg, Yuyv};

    #[test]
    fn the_first_preferred_format_with_an_exact_fit_wins() {
        let mode = negotiate(&config(640, 480, 30, &[Yuyv, Mjpeg]), &webcam()).unwrap();
        assert_eq!((mode.format, mode.width, mode.fps), (Yuyv, 640, Some(30.0)));
        let mode = negotiate(&config(640, 480, 30, &[Mjpeg, Yuyv]), &webcam()).unwrap();
        assert_eq!(mode.format, Mjpeg);
    }

    #[test]
    fn a_slow_preferred_format_yields_to_one_that_keeps_the_rate() {
        let mode = negotiate(&config(1280, 720, 30, &[Yuyv, Mjpeg]), &webcam()).unwrap();
        assert_eq!((mode.format, mode.width, mode.height), (Mjpeg, 1280, 720));
        // With only YUYV allowed, the size is kept and the best rate taken.
        let mode = negotiate(&config(1280, 720, 30, &[Yuyv]), &webcam()).unwrap();
        assert_eq!(
            (mode.format, mode.width, mode.fps),
            (Yuyv, 1280, Some(10.0))
        );
    }

    #[test]
    fn nearest_size_when_the_request_is_not_offered() {
        let mode = negotiate(&config(800, 600, 30, &[Yuyv]), &webcam()).unwrap();
        assert_eq!((mode.width, mode.height), (640, 480));
        let mode = negotiate(&config(1920, 1080, 30, &[Yuyv, Mjpeg]), &webcam()).unwrap();
        assert_eq!((mode.format, mode.width, mode.height), (Mjpeg, 1280, 720));
    }

    #[test]
    fn rate_ranges_and_unknown_rates() {
        let offers = vec![FormatOffer {
            fourcc: *b"YUYV",
            sizes: vec![SizeOffer {
                width: 320,
                height: 240,
                fps: vec![FpsRange {
                    min: 1.0,
                    max: 60.0,
                }],
            }],
        }];
        let mode = negotiate(&config(320, 240, 25, &[Yuyv]), &offers).unwrap();
        assert_eq!(mode.fps, Some(25.0));
        let offers = vec![FormatOffer {
            fourcc: *b"MJPG",
            sizes: vec![size(320, 240, &[])],
        }];
        let mode = negotiate(&config(320, 240, 25, &[Yuyv, Mjpeg]), &offers).unwrap();
        assert_eq!((mode.format, mode.fps), (Mjpeg, None));
    }

    #[test]
    fn no_acceptable_format_lists_what_is_offered() {
        let offers = vec![FormatOffer {
            fourcc: *b"NV12",
            sizes: vec![size(640, 480, &[30.0])],
        }];
        let err = negotiate(&config(640, 480, 30, &[Yuyv, Mjpeg]), &offers).unwrap_err();
        assert!(err.contains("NV12") && err.contains("YUYV, MJPG"), "{err}");
    }

    #[test]
    fn stepwise_sizes_snap_to_the_grid() {
        assert_eq!(snap_stepwise(641, 16, 1920, 16), 640);
        assert_eq!(snap_stepwise(650, 16, 1920, 16), 656);
        assert_eq!(snap_stepwise(5000, 16, 1920, 16), 1920);
        assert_eq!(snap_stepwise(2, 16, 1920, 16), 16);
        assert_eq!(snap_stepwise(333, 1, 1000, 1), 333);
        assert_eq!(fourcc(Mjpeg), Some(*b"MJPG"));
        assert_eq!(format_of(*b"YUYV"), Some(Yuyv));
        assert_eq!(format_of(*b"RGB3"), None);
    }
}
