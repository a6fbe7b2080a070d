//! The crop margin measured for UltraFace on real FER2013 faces, and the board path with it:
//! a face crop placed in a camera frame, found by the detector and cut with the measured
//! margin, is classified about as well as the crop itself.

use edge::classify::Classifier;
use edge::detect::Detector;
use edge::margin::{Framing, measure, sample_images};
use firmware_config::config::{ClassifierConfig, DetectorConfig};

fn ultraface() -> Option<Detector> {
    let path = testdata::shared_path("models/ultraface/version-RFB-320_simplified.onnx")?;
    Some(Detector::ultraface(&path, &DetectorConfig::default()).expect("UltraFace loads"))
}

#[test]
fn ultraface_margin_on_fer2013_faces_is_measured_and_reproduces_the_training_crop() {
    let (Some(detector), Some(val), Some(model)) = (
        ultraface(),
        testdata::shared_path("data/fer2013/val"),
        testdata::peer_model(),
    ) else {
        return;
    };
    let images = sample_images(&val, 210).unwrap();
    let report = measure(&detector, &images, 320, 240).unwrap();
    eprintln!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.images, 210);
    assert!(
        report.detected * 2 > report.images,
        "UltraFace finds most FER2013 faces: {report:?}"
    );
    assert!(
        (-0.2..0.6).contains(&report.margin),
        "a plausible margin: {report:?}"
    );

    let classify = |margin: f32, detector: &Detector, framing: Framing| {
        let mut manifest = testdata::peer_manifest();
        manifest.preprocessing.crop_margin = margin;
        let classifier = Classifier::load(&model, manifest, &ClassifierConfig::default()).unwrap();
        classifier
            .evaluate_folder(detector, &val, Some(40), framing)
            .unwrap()
    };
    let in_frame = Framing::InFrame {
        width: 320,
        height: 240,
    };
    let crops = classify(0.0, &Detector::WholeFrame, Framing::AsIs);
    let measured = classify(report.margin, &detector, in_frame);
    let none = classify(0.0, &detector, in_frame);
    eprintln!(
        "accuracy: crops {:.3}, board with the measured margin {:.3} ({} no face), board \
         with margin 0 {:.3}",
        crops.accuracy, measured.accuracy, measured.no_face, none.accuracy
    );
    let found = |r: &edge::classify::FolderReport| r.correct as f64 / (r.images - r.no_face) as f64;
    assert!(
        (found(&measured) - crops.accuracy).abs() < 0.08,
        "the measured margin reproduces the training framing"
    );
}
