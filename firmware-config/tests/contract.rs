//! Round-trips of every contract type, and detection of every kind of damage.

use firmware_config::config::{
    CameraPixelFormat, ClassThreshold, DetectorKind, DeviceConfig, DisplayOutput,
    MAX_DETECT_INTERVAL, StorePolicy,
};
use firmware_config::manifest::{
    ColorChannels, ModelManifest, Normalization, Precision, Preprocessing, ResizeFilter, SelfTest,
    TensorLayout,
};
use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
use firmware_config::record::FieldRecord;
use firmware_config::segment::{self, SegmentHeader};
use firmware_config::{Error, PublicKey, SCHEMA_VERSION, Sha256Digest, flash};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,11}"
}

fn unit() -> impl Strategy<Value = f32> {
    0.0f32..=1.0
}

fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    prop::array::uniform32(any::<u8>())
}

fn device_config() -> impl Strategy<Value = DeviceConfig> {
    (
        (name(), ".{0,20}", 1u32..4000, 1u32..4000, 1u32..240),
        (
            prop::sample::subsequence(
                vec![CameraPixelFormat::Yuyv, CameraPixelFormat::Mjpeg],
                1..=2,
            ),
            prop::sample::select(vec![
                DetectorKind::Ultraface,
                DetectorKind::Cascade,
                DetectorKind::None,
            ]),
            unit(),
            0.01f32..=1.0,
            0u32..200,
            1u32..=MAX_DETECT_INTERVAL,
        ),
        (
            unit(),
            prop::collection::vec((name(), unit()), 0..4),
            0.01f32..=1.0,
        ),
        (
            any::<bool>(),
            1024u64..=segment::MAX_SEGMENT_BYTES / 2,
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
        ),
        (any::<bool>(), 0u8..3, prop::option::of(bytes32())),
    )
        .prop_map(|(ident, det, cls, log, rest)| {
            let mut c = DeviceConfig::default();
            (
                c.device.id,
                c.device.name,
                c.camera.width,
                c.camera.height,
                c.camera.fps,
            ) = ident;
            c.camera.pixel_formats = det.0;
            c.detector.kind = det.1;
            c.detector.score_threshold = det.2;
            c.detector.nms_iou = det.3;
            c.detector.min_face_size = det.4;
            c.detector.interval = det.5;
            c.classifier.default_threshold = cls.0;
            let mut seen = Vec::new();
            for (class, t) in cls.1 {
                if !seen.contains(&class) {
                    seen.push(class.clone());
                    c.classifier
                        .class_thresholds
                        .push(ClassThreshold::new(class, t));
                }
            }
            c.classifier.smoothing = cls.2;
            c.field_log.enabled = log.0;
            c.field_log.segment_bytes = log.1;
            c.field_log.quota_bytes = log.1 * 4;
            c.field_log.max_records_per_minute = log.2;
            c.field_log.dedup_window_ms = log.3;
            c.field_log.store = if log.4 {
                StorePolicy::CropAndFrame
            } else {
                StorePolicy::Crop
            };
            c.display.overlay = rest.0;
            c.display.output = match rest.1 {
                0 => DisplayOutput::None,
                1 => DisplayOutput::Snapshots {
                    directory: "/tmp/snaps".into(),
                    every_n_frames: 5,
                },
                _ => DisplayOutput::Framebuffer {
                    device: "/dev/fb0".into(),
                },
            };
            c.signing_public_key = rest.2.map(PublicKey);
            c
        })
}

fn manifest() -> impl Strategy<Value = ModelManifest> {
    (
        (
            1u32..256,
            1u32..256,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0.0f32..1.0,
        ),
        prop::collection::vec(name(), 2..9),
        (
            bytes32(),
            bytes32(),
            prop::collection::vec(-10.0f32..10.0, 0..16),
            any::<bool>(),
        ),
    )
        .prop_map(|(pre, names, (model, input, expected, int8))| {
            let mut names = names;
            names.sort();
            names.dedup();
            if names.len() < 2 {
                names = vec!["a".into(), "b".into()];
            }
            let channels = if pre.2 {
                ColorChannels::Rgb
            } else {
                ColorChannels::Gray
            };
            let n = channels.count();
            ModelManifest {
                model_sha256: Sha256Digest(model),
                precision: if int8 {
                    Precision::Int8
                } else {
                    Precision::Fp32
                },
                preprocessing: Preprocessing {
                    input_width: pre.0,
                    input_height: pre.1,
                    channels,
                    layout: if pre.3 {
                        TensorLayout::Nhwc
                    } else {
                        TensorLayout::Nchw
                    },
                    crop_margin: pre.5,
                    resize: if pre.4 {
                        ResizeFilter::Nearest
                    } else {
                        ResizeFilter::Bilinear
                    },
                    normalization: Normalization::new(1.0 / 255.0, vec![0.5; n], vec![0.25; n]),
                },
                class_thresholds: names
                    .iter()
                    .enumerate()
                    .map(|(i, _)| i as f32 / 10.0)
                    .collect(),
                class_names: names,
                training_run_id: "run-1".into(),
                self_test: SelfTest {
                    input_file: "selftest.bin".into(),
                    input_sha256: Sha256Digest(input),
                    expected_output: expected,
                    tolerance: 1e-4,
                },
                ..ModelManifest::default()
            }
        })
}

fn image() -> impl Strategy<Value = ImageBuf> {
    (1u32..12, 1u32..12, any::<bool>()).prop_flat_map(|(w, h, rgb)| {
        let format = if rgb {
            PixelFormat::Rgb8
        } else {
            PixelFormat::Gray8
        };
        let len = (w * h) as usize * format.channels();
        prop::collection::vec(any::<u8>(), len)
            .prop_map(move |px| ImageBuf::new(w, h, format, px).unwrap())
    })
}

fn record() -> impl Strategy<Value = FieldRecord> {
    (
        (any::<u64>(), name(), bytes32(), any::<u64>(), any::<u32>()),
        (0.0f32..640.0, 0.0f32..480.0, 1.0f32..200.0, 1.0f32..200.0),
        prop::collection::vec(unit(), 2..8),
        image(),
        prop::option::of(image()),
    )
        .prop_map(|(meta, b, probs, crop, frame)| FieldRecord {
            timestamp_ms: meta.0,
            device_id: meta.1,
            model_sha256: Sha256Digest(meta.2),
            frame_seq: meta.3,
            track_id: meta.4,
            face: FaceBox {
                x: b.0,
                y: b.1,
                width: b.2,
                height: b.3,
            },
            probabilities: probs,
            crop,
            frame,
        })
}

fn segment_bytes(records: &[FieldRecord], seal: bool) -> Vec<u8> {
    let header = SegmentHeader {
        device_id: "board-1".into(),
        created_ms: 1_700_000_000_000,
        sequence: 3,
    };
    let mut file = segment::encode_header(&header).unwrap();
    for r in records {
        file.extend(segment::encode_record(r).unwrap());
    }
    if seal {
        file.extend(segment::encode_seal(records.len() as u64));
    }
    file
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn config_round_trips_binary_and_json(config in device_config()) {
        let bytes = flash::encode_config(&config).unwrap();
        prop_assert_eq!(&flash::decode_config(&bytes).unwrap(), &config);
        let json = serde_json::to_string(&config).unwrap();
        prop_assert_eq!(serde_json::from_str::<DeviceConfig>(&json).unwrap(), config);
    }

    #[test]
    fn manifest_round_trips_binary_and_json(m in manifest()) {
        let bytes = flash::encode_manifest(&m).unwrap();
        prop_assert_eq!(&flash::decode_manifest(&bytes).unwrap(), &m);
        let json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<ModelManifest>(&json).unwrap(), m);
    }

    #[test]
    fn segments_round_trip(records in prop::collection::vec(record(), 0..6)) {
        let file = segment_bytes(&records, true);
        let scan = segment::read_segment(&file).unwrap();
        prop_assert!(scan.is_intact(), "{:?}", scan.skipped);
        prop_assert_eq!(scan.valid_len, file.len());
        prop_assert_eq!(scan.records, records);
    }
}

fn small_record(seq: u64) -> FieldRecord {
    FieldRecord {
        timestamp_ms: 1_700_000_000_000 + seq,
        device_id: "board-1".into(),
        model_sha256: Sha256Digest([7; 32]),
        frame_seq: seq,
        track_id: seq as u32 % 3,
        face: FaceBox {
            x: 10.0,
            y: 20.0,
            width: 30.0,
            height: 30.0,
        },
        probabilities: vec![0.4, 0.35, 0.25],
        crop: ImageBuf::new(2, 2, PixelFormat::Gray8, vec![0, 1, 255, 128]).unwrap(),
        frame: None,
    }
}

#[test]
fn every_byte_flip_of_a_config_is_detected() {
    let mut config = DeviceConfig::default();
    config.signing_public_key = Some(PublicKey([9; 32]));
    let bytes = flash::encode_config(&config).unwrap();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[i] ^= 1 << bit;
            assert!(
                flash::decode_config(&damaged).is_err(),
                "flip of bit {bit} in byte {i} went unnoticed"
            );
        }
    }
}

#[test]
fn every_truncation_of_a_config_is_detected() {
    let bytes = flash::encode_config(&DeviceConfig::default()).unwrap();
    for len in 0..bytes.len() {
        let err = flash::decode_config(&bytes[..len]).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { .. }),
            "cut at {len}: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        flash::decode_config(&longer),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn every_byte_flip_of_a_segment_is_detected_and_never_forges_a_record() {
    let records: Vec<_> = (0..3).map(small_record).collect();
    let file = segment_bytes(&records, true);
    for i in 0..file.len() {
        for bit in 0..8 {
            let mut damaged = file.clone();
            damaged[i] ^= 1 << bit;
            match segment::read_segment(&damaged) {
                Err(_) => assert!(i < segment::PREFIX_LEN, "byte {i}: prefix errors only"),
                Ok(scan) => {
                    assert!(
                        !scan.is_intact(),
                        "flip of bit {bit} in byte {i} went unnoticed"
                    );
                    for r in &scan.records {
                        assert!(
                            records.contains(r),
                            "byte {i}: a damaged record was returned"
                        );
                    }
                    // Damage costs at most the frames it touches (two, where a flip merges
                    // a frame with its neighbour by clearing the delimiter between them).
                    assert!(
                        scan.records.len() + 2 >= records.len(),
                        "byte {i}: lost too much"
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_of_a_segment_is_detected_and_keeps_the_prefix() {
    let records: Vec<_> = (0..3).map(small_record).collect();
    let file = segment_bytes(&records, true);
    for len in 0..file.len() {
        match segment::read_segment(&file[..len]) {
            Err(err) => assert!(len < segment::PREFIX_LEN, "cut at {len}: {err}"),
            Ok(scan) => {
                assert!(!scan.is_intact(), "cut at {len} went unnoticed");
                assert_eq!(
                    scan.records[..],
                    records[..scan.records.len()],
                    "cut at {len}"
                );
                assert!(scan.valid_len <= len);
                // Cutting at valid_len leaves a file that reads without damage.
                let cut = segment::read_segment(&file[..scan.valid_len]).unwrap();
                assert!(
                    cut.skipped.is_empty(),
                    "cut at {len} then at {}",
                    scan.valid_len
                );
                assert_eq!(cut.records, scan.records);
            }
        }
    }
}

#[test]
fn a_damaged_middle_record_is_skipped_and_the_rest_recovered() {
    let records: Vec<_> = (0..5).map(small_record).collect();
    let mut file = segment_bytes(&records, true);
    let header_len = segment::encode_header(&SegmentHeader {
        device_id: "board-1".into(),
        created_ms: 1_700_000_000_000,
        sequence: 3,
    })
    .unwrap()
    .len();
    let frame_len = segment::encode_record(&records[0]).unwrap().len();
    let middle = header_len + 2 * frame_len + frame_len / 2;
    file[middle] ^= 0x55;
    let scan = segment::read_segment(&file).unwrap();
    assert_eq!(
        scan.skipped.len(),
        2,
        "the damaged record, then the seal's count disagrees"
    );
    assert_eq!(scan.skipped[0].offset, header_len + 2 * frame_len);
    assert!(
        matches!(scan.skipped[0].reason, Error::CrcMismatch { .. }),
        "{:?}",
        scan.skipped[0]
    );
    assert_eq!(scan.records.len(), 4);
    assert!(!scan.records.contains(&records[2]));
}

#[test]
fn a_seal_before_the_end_hides_no_record() {
    // A stray seal (found by the framed_payload fuzzer's corpus in CI): the records after it
    // are recovered, and the segment is reported as damaged at the stray seal.
    let records: Vec<_> = (0..3).map(small_record).collect();
    let mut file = segment_bytes(&records[..1], true);
    let stray = file.len() - segment::encode_seal(1).len();
    for record in &records[1..] {
        file.extend(segment::encode_record(record).unwrap());
    }
    file.extend(segment::encode_seal(3));
    let scan = segment::read_segment(&file).unwrap();
    assert_eq!(scan.records, records);
    assert!(scan.sealed, "the last seal counts every record");
    assert_eq!(scan.skipped.len(), 1, "{:?}", scan.skipped);
    assert_eq!(scan.skipped[0].offset, stray);
    assert!(!scan.is_intact());
}

#[test]
fn future_schema_versions_are_refused_with_a_clear_message() {
    let future = SCHEMA_VERSION + 1;
    let mut config = flash::encode_config(&DeviceConfig::default()).unwrap();
    config[4..6].copy_from_slice(&future.to_le_bytes());
    let err = flash::decode_config(&config).unwrap_err();
    assert_eq!(
        err,
        Error::UnsupportedSchemaVersion {
            found: future,
            supported: SCHEMA_VERSION
        }
    );
    assert!(
        err.to_string().contains("newer than this build reads"),
        "{err}"
    );

    let mut file = segment_bytes(&[small_record(0)], true);
    file[4..6].copy_from_slice(&future.to_le_bytes());
    assert!(matches!(
        segment::read_segment(&file),
        Err(Error::UnsupportedSchemaVersion { .. })
    ));

    let manifest = ModelManifest {
        schema_version: future,
        ..valid_manifest()
    };
    let json = serde_json::to_string(&manifest).unwrap();
    let parsed: ModelManifest = serde_json::from_str(&json).unwrap();
    assert!(matches!(
        parsed.validate(),
        Err(Error::UnsupportedSchemaVersion { .. })
    ));
}

#[test]
fn another_file_kind_is_bad_magic() {
    let manifest = flash::encode_manifest(&valid_manifest()).unwrap();
    assert!(matches!(
        flash::decode_config(&manifest),
        Err(Error::BadMagic { .. })
    ));
    let err = segment::read_segment(b"\x89PNG\r\n\x1a\n").unwrap_err();
    assert!(err.to_string().contains("not a file of this kind"), "{err}");
}

#[test]
fn invalid_values_name_their_field() {
    let mut config = DeviceConfig::default();
    config.classifier.class_thresholds = vec![ClassThreshold::new("happy", 1.5)];
    let err = flash::encode_config(&config).unwrap_err();
    assert!(
        err.to_string().contains("classifier.class_thresholds[0]"),
        "{err}"
    );

    for interval in [0, MAX_DETECT_INTERVAL + 1] {
        let mut config = DeviceConfig::default();
        config.detector.interval = interval;
        let err = flash::encode_config(&config).unwrap_err();
        assert!(err.to_string().contains("detector.interval"), "{err}");
    }

    let mut m = valid_manifest();
    m.preprocessing.normalization.std = vec![0.0];
    assert!(
        m.validate()
            .unwrap_err()
            .to_string()
            .contains("normalization")
    );
    let mut m = valid_manifest();
    m.class_thresholds.pop();
    assert!(
        m.validate()
            .unwrap_err()
            .to_string()
            .contains("class_thresholds")
    );
}

#[test]
fn unknown_json_fields_are_refused() {
    let err = serde_json::from_str::<DeviceConfig>(r#"{"camera": {"widht": 320}}"#).unwrap_err();
    assert!(err.to_string().contains("widht"), "{err}");
}

fn valid_manifest() -> ModelManifest {
    ModelManifest {
        class_names: vec!["happy".into(), "sad".into()],
        class_thresholds: vec![0.7, 0.8],
        ..ModelManifest::default()
    }
}

/// A record framed with a correct CRC as a hostile board would write it: the entry's variant
/// (0: a record) and the record, whatever it holds.
fn crafted_segment(record: &FieldRecord) -> Vec<u8> {
    let mut file = segment_bytes(&[small_record(0)], false);
    let mut payload = vec![0u8];
    payload.extend(postcard::to_allocvec(record).unwrap());
    file.extend(segment::frame_payload(payload));
    file.extend(segment::encode_record(&small_record(1)).unwrap());
    file
}

#[test]
fn a_record_whose_crafted_size_wraps_is_skipped_not_accepted() {
    // 4294853786 x 1431693603 x 3 wraps to 41258 in 64-bit (and 32-bit) arithmetic.
    let mut hostile = small_record(9);
    hostile.crop = ImageBuf {
        width: 4_294_853_786,
        height: 1_431_693_603,
        format: PixelFormat::Rgb8,
        pixels: vec![0; 41_258],
    };
    assert!(hostile.crop.validate().is_err());
    let scan = segment::read_segment(&crafted_segment(&hostile)).unwrap();
    assert_eq!(
        scan.records.iter().map(|r| r.frame_seq).collect::<Vec<_>>(),
        [0, 1],
        "the good records around it are kept"
    );
    assert_eq!(scan.skipped.len(), 1, "{:?}", scan.skipped);
    assert!(segment::encode_record(&hostile).is_err());
}

#[test]
fn a_record_with_a_non_finite_number_is_skipped_not_accepted() {
    let mut nan_probability = small_record(9);
    nan_probability.probabilities[1] = f32::NAN;
    let mut infinite_box = small_record(9);
    infinite_box.face.width = f32::INFINITY;
    for hostile in [nan_probability, infinite_box] {
        let scan = segment::read_segment(&crafted_segment(&hostile)).unwrap();
        assert_eq!(scan.records.len(), 2, "{:?}", scan.skipped);
        assert_eq!(scan.skipped.len(), 1);
        assert!(segment::encode_record(&hostile).is_err());
    }
}

#[test]
fn a_config_or_manifest_naming_a_path_outside_the_bundle_is_refused() {
    for bad in [
        "/home/u/.bashrc",
        "../detector.onnx",
        "sub/detector.onnx",
        ".hidden",
    ] {
        let mut config = DeviceConfig::default();
        config.detector.model_file = bad.into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("detector.model_file"), "{bad}: {err}");
        let mut manifest = valid_manifest();
        manifest.self_test.input_file = bad.into();
        let err = manifest.validate().unwrap_err().to_string();
        assert!(err.contains("self_test.input_file"), "{bad}: {err}");
    }
    let mut none = DeviceConfig::default();
    none.detector.kind = DetectorKind::None;
    none.detector.model_file = String::new();
    none.validate().unwrap();
}
