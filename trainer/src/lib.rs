//! Semi-supervised facial-expression training on burn.
//!
//! * [`model`]: backbone (ResNet-style or mobile) + local attention enhancement + random
//!   region dropout.
//! * [`algorithm`]: one file per rule: dynamic thresholds (`dta.rs`), pseudo-labels
//!   (`pseudo_label.rs`), selective negative learning (`negative.rs`), the EMA teacher
//!   (`teacher.rs`).
//! * [`data`]: ImageFolder / FER2013 CSV / unlabeled folders / field-log segments, label
//!   budget, augmentation, background batch building.
//! * [`train`]: the training loop ([`train::train`], [`train::resume`]), one step
//!   ([`train::step`]), the configuration ([`train::config`], [`TrainConfig`]) and the metrics
//!   log ([`train::metrics`]).
//! * [`checkpoint`]: checkpoints ([`checkpoint::load`]) with thresholds for the board.
//! * [`eval`]: accuracy, per-class recall, macro-F1, confusion matrix.
//! * [`bench`](mod@bench): training and inference throughput.
//! * [`backend`]: flex (CPU), cuda and tch backends, checked before use.
//! * [`plots`]: PNG plots of a run (accuracy, thresholds, pseudo-label rate, confusion).
//! * [`compare`]: finished runs side by side (Markdown table, JSON, accuracy plot).
//! * [`export`]: ONNX export (fp32, and int8 after calibration: integer QLinearConv or QDQ)
//!   with the manifest the board reads.
//!
//! The algorithm is our formulation of the ideas of arXiv 2601.05556; docs/design.md states
//! every formula and the measurements behind each choice.

pub mod algorithm;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod error;
pub mod eval;
pub mod export;
pub mod model;
pub mod plots;
pub mod train;

pub use error::{Error, Result};
pub use train::TrainConfig;
