//! OpenCV boosted cascades (Haar and LBP features) read from OpenCV's own XML files and run
//! on integral images: the model-free fallback detector.
//!
//! This follows OpenCV's `CascadeClassifier::detectMultiScale`: the image is shrunk by
//! `scale_factor` per level, the fixed-size window slides with a step of 2 pixels (1 once the
//! scale passes 2), each window runs the stages until one rejects it, and the surviving windows
//! are merged by `groupRectangles` (boxes whose edges are within 20% agree; a group needs more
//! than `min_neighbors` members).

use std::path::{Path, PathBuf};

use super::xml::{self, Element};
use crate::error::{Error, Result};

/// The standard frontal-face cascade of Debian/Ubuntu/JetPack's `opencv-data` package.
pub const DEFAULT_CASCADE: &str =
    "/usr/share/opencv4/lbpcascades/lbpcascade_frontalface_improved.xml";

/// Search parameters of [`Cascade::detect`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CascadeParams {
    /// Size ratio between pyramid levels (OpenCV's usual 1.1).
    pub scale_factor: f32,
    /// A detection needs more than this many overlapping raw windows (OpenCV's usual 3).
    pub min_neighbors: u32,
    /// Smallest face side in pixels of the input image; smaller windows are not searched.
    pub min_size: u32,
}

impl Default for CascadeParams {
    fn default() -> Self {
        Self {
            scale_factor: 1.1,
            min_neighbors: 3,
            min_size: 0,
        }
    }
}

/// An axis-aligned box in integer pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width.
    pub width: i32,
    /// Height.
    pub height: i32,
}

/// One merged detection: the averaged box and how many raw windows were merged into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CascadeHit {
    /// The face box in input pixels.
    pub rect: Rect,
    /// Raw windows merged into it (OpenCV's "neighbours"): a confidence of sorts.
    pub neighbors: u32,
}

/// One weighted rectangle of a Haar feature: (x, y, w, h, weight) relative to the window.
type HaarRect = (i32, i32, i32, i32, f32);

#[derive(Debug, Clone)]
enum Features {
    /// Weighted rectangle sums.
    Haar(Vec<Vec<HaarRect>>),
    /// 3x3 blocks of (w, h) at (x, y): an 8-bit local binary pattern.
    Lbp(Vec<(i32, i32, i32, i32)>),
}

#[derive(Debug, Clone)]
enum Weak {
    /// A tree of threshold nodes (left, right, feature, threshold); a child <= 0 is leaf -child.
    Tree {
        nodes: Vec<(i32, i32, usize, f32)>,
        leaves: Vec<f32>,
    },
    /// A categorical stump on an LBP code: leaf 0 when the code's bit is set in `subset`.
    Categorical {
        feature: usize,
        subset: [u32; 8],
        leaves: [f32; 2],
    },
}

#[derive(Debug, Clone)]
struct Stage {
    threshold: f32,
    weak: Vec<Weak>,
}

/// A boosted cascade loaded from an OpenCV XML file (new-style `<cascade>` format, as shipped
/// in `opencv-data`; Haar features must be upright).
#[derive(Debug, Clone)]
pub struct Cascade {
    path: PathBuf,
    window: (i32, i32),
    features: Features,
    stages: Vec<Stage>,
}

/// OpenCV subtracts this from every stage threshold to absorb rounding in the training tool.
const STAGE_THRESHOLD_EPS: f32 = 1e-5;

impl Cascade {
    /// Reads and checks a cascade XML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        Self::from_xml(&text, path)
    }

    /// Parses cascade XML; `path` is only used in errors.
    pub fn from_xml(text: &str, path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Cascade {
            path: path.to_path_buf(),
            reason,
        };
        let root = xml::parse(text).map_err(|e| fail(format!("not valid XML: {e}")))?;
        let cascade = root.require("cascade").map_err(|e| {
            fail(format!(
                "{e}: not an OpenCV cascade in the current format (old `haarcascade` files \
                 must be converted with opencv_traincascade's converter)"
            ))
        })?;
        Self::from_element(cascade, path).map_err(fail)
    }

    fn from_element(c: &Element, path: &Path) -> Result<Self, String> {
        let stage_type = c.require("stageType")?.text.trim();
        if stage_type != "BOOST" {
            return Err(format!(
                "stageType {stage_type:?} is not supported (only BOOST)"
            ));
        }
        let width: i32 = c.number("width")?;
        let height: i32 = c.number("height")?;
        if !(4..=512).contains(&width) || !(4..=512).contains(&height) {
            return Err(format!("window {width}x{height} is out of range"));
        }
        let feature_type = c.require("featureType")?.text.trim().to_ascii_uppercase();
        let feature_list = &c.require("features")?.children;
        let features = match feature_type.as_str() {
            "HAAR" => Features::Haar(
                feature_list
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        haar_feature(f, width, height).map_err(|e| format!("feature {i}: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "LBP" => Features::Lbp(
                feature_list
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        lbp_feature(f, width, height).map_err(|e| format!("feature {i}: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(format!(
                    "featureType {other:?} is not supported (HAAR or LBP)"
                ));
            }
        };
        let n_features = match &features {
            Features::Haar(f) => f.len(),
            Features::Lbp(f) => f.len(),
        };
        let lbp = matches!(features, Features::Lbp(_));
        let mut stages = Vec::new();
        for (si, st) in c.require("stages")?.children.iter().enumerate() {
            let threshold: f32 = st.number("stageThreshold")?;
            let mut weak = Vec::new();
            for (wi, w) in st.require("weakClassifiers")?.children.iter().enumerate() {
                let at = |e: String| format!("stage {si}, weak classifier {wi}: {e}");
                let nodes: Vec<f64> = w
                    .require("internalNodes")
                    .and_then(|n| n.numbers())
                    .map_err(at)?;
                let leaves: Vec<f32> = w
                    .require("leafValues")
                    .and_then(|n| n.numbers())
                    .map_err(at)?;
                weak.push(if lbp {
                    categorical(&nodes, &leaves, n_features).map_err(at)?
                } else {
                    tree(&nodes, leaves, n_features).map_err(at)?
                });
            }
            if weak.is_empty() {
                return Err(format!("stage {si} has no weak classifiers"));
            }
            stages.push(Stage {
                threshold: threshold - STAGE_THRESHOLD_EPS,
                weak,
            });
        }
        if stages.is_empty() {
            return Err("the cascade has no stages".into());
        }
        Ok(Self {
            path: path.to_path_buf(),
            window: (width, height),
            features,
            stages,
        })
    }

    /// The file this cascade came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The training window (width, height) in pixels: the smallest face it can find.
    pub fn window(&self) -> (u32, u32) {
        (self.window.0 as u32, self.window.1 as u32)
    }

    /// Finds faces in an 8-bit grayscale image (`gray.len() == width * height`).
    pub fn detect(
        &self,
        width: usize,
        height: usize,
        gray: &[u8],
        params: &CascadeParams,
    ) -> Vec<CascadeHit> {
        assert_eq!(gray.len(), width * height, "gray image size");
        let (ww, wh) = self.window;
        let scale_factor = params.scale_factor.max(1.01) as f64;
        let mut raw = Vec::new();
        let mut factor = 1.0f64;
        loop {
            let win_w = (ww as f64 * factor).round() as i32;
            let win_h = (wh as f64 * factor).round() as i32;
            let sw = (width as f64 / factor).round() as i32;
            let sh = (height as f64 / factor).round() as i32;
            if win_w > width as i32 || win_h > height as i32 || sw <= ww || sh <= wh {
                break;
            }
            if win_w.min(win_h) >= params.min_size as i32 {
                let scaled = resize_bilinear(gray, width, height, sw as usize, sh as usize);
                let integral = Integral::new(
                    &scaled,
                    sw as usize,
                    sh as usize,
                    matches!(self.features, Features::Haar(_)),
                );
                let step = if factor > 2.0 { 1 } else { 2 };
                for y in (0..=sh - wh).step_by(step) {
                    for x in (0..=sw - ww).step_by(step) {
                        if self.accepts(&integral, x, y) {
                            raw.push(Rect {
                                x: (x as f64 * factor).round() as i32,
                                y: (y as f64 * factor).round() as i32,
                                width: win_w,
                                height: win_h,
                            });
                        }
                    }
                }
            }
            factor *= scale_factor;
        }
        group_rectangles(&raw, params.min_neighbors, 0.2)
    }

    fn accepts(&self, ii: &Integral, x: i32, y: i32) -> bool {
        match &self.features {
            Features::Haar(features) => {
                let (ww, wh) = self.window;
                let area = ((ww - 2) * (wh - 2)) as f64;
                let sum = ii.sum(x + 1, y + 1, ww - 2, wh - 2) as f64;
                let sq = ii.sq_sum(x + 1, y + 1, ww - 2, wh - 2);
                let nf = area * sq - sum * sum;
                let inv_norm = if nf > 0.0 { 1.0 / nf.sqrt() } else { 1.0 } as f32;
                let eval = |f: usize| -> f32 {
                    let v: f32 = features[f]
                        .iter()
                        .map(|&(rx, ry, rw, rh, weight)| {
                            weight * ii.sum(x + rx, y + ry, rw, rh) as f32
                        })
                        .sum();
                    v * inv_norm
                };
                self.stages.iter().all(|stage| {
                    let total: f32 = stage
                        .weak
                        .iter()
                        .map(|w| match w {
                            Weak::Tree { nodes, leaves } => {
                                let mut idx = 0i32;
                                loop {
                                    let (left, right, f, t) = nodes[idx as usize];
                                    idx = if eval(f) < t { left } else { right };
                                    if idx <= 0 {
                                        break leaves[(-idx) as usize];
                                    }
                                }
                            }
                            Weak::Categorical { .. } => {
                                unreachable!("checked at load: Haar cascades have trees")
                            }
                        })
                        .sum();
                    total >= stage.threshold
                })
            }
            Features::Lbp(features) => self.stages.iter().all(|stage| {
                let total: f32 = stage
                    .weak
                    .iter()
                    .map(|w| match w {
                        Weak::Categorical {
                            feature,
                            subset,
                            leaves,
                        } => {
                            let (fx, fy, fw, fh) = features[*feature];
                            let code = lbp_code(ii, x + fx, y + fy, fw, fh);
                            if subset[code >> 5] & (1 << (code & 31)) != 0 {
                                leaves[0]
                            } else {
                                leaves[1]
                            }
                        }
                        Weak::Tree { .. } => {
                            unreachable!("checked at load: LBP cascades have stumps")
                        }
                    })
                    .sum();
                total >= stage.threshold
            }),
        }
    }
}

fn haar_feature(f: &Element, width: i32, height: i32) -> Result<Vec<HaarRect>, String> {
    if let Some(t) = f.child("tilted")
        && t.text.trim() != "0"
    {
        return Err("tilted Haar features are not supported".into());
    }
    let rects = &f.require("rects")?.children;
    if rects.is_empty() || rects.len() > 3 {
        return Err(format!("{} rectangles (1 to 3 expected)", rects.len()));
    }
    rects
        .iter()
        .map(|r| {
            let v: Vec<f32> = r.numbers()?;
            let [x, y, w, h, weight] = v[..] else {
                return Err(format!("a rectangle needs 5 numbers, got {}", v.len()));
            };
            let (x, y, w, h) = (x as i32, y as i32, w as i32, h as i32);
            if x < 0 || y < 0 || w <= 0 || h <= 0 || x + w > width || y + h > height {
                return Err(format!(
                    "rectangle {x},{y},{w},{h} leaves the {width}x{height} window"
                ));
            }
            Ok((x, y, w, h, weight))
        })
        .collect()
}

fn lbp_feature(f: &Element, width: i32, height: i32) -> Result<(i32, i32, i32, i32), String> {
    let v: Vec<i32> = f.require("rect")?.numbers()?;
    let [x, y, w, h] = v[..] else {
        return Err(format!("an LBP rect needs 4 numbers, got {}", v.len()));
    };
    if x < 0 || y < 0 || w <= 0 || h <= 0 || x + 3 * w > width || y + 3 * h > height {
        return Err(format!(
            "LBP blocks {x},{y},{w}x{h} leave the {width}x{height} window"
        ));
    }
    Ok((x, y, w, h))
}

fn categorical(nodes: &[f64], leaves: &[f32], n_features: usize) -> Result<Weak, String> {
    if nodes.len() != 11 || leaves.len() != 2 {
        return Err(format!(
            "{} node numbers and {} leaves: only depth-1 LBP stumps (11 numbers, 2 leaves) are supported",
            nodes.len(),
            leaves.len()
        ));
    }
    let feature = feature_index(nodes[2], n_features)?;
    let mut subset = [0u32; 8];
    for (s, &v) in subset.iter_mut().zip(&nodes[3..]) {
        // The XML stores the 32-bit masks as signed integers.
        *s = v as i64 as i32 as u32;
    }
    Ok(Weak::Categorical {
        feature,
        subset,
        leaves: [leaves[0], leaves[1]],
    })
}

fn tree(nodes: &[f64], leaves: Vec<f32>, n_features: usize) -> Result<Weak, String> {
    if nodes.is_empty() || !nodes.len().is_multiple_of(4) {
        return Err(format!(
            "{} node numbers: Haar nodes have 4 numbers each",
            nodes.len()
        ));
    }
    let n_nodes = nodes.len() / 4;
    let parsed = nodes
        .chunks_exact(4)
        .map(|n| {
            let (left, right) = (n[0] as i32, n[1] as i32);
            for child in [left, right] {
                let bad_node = child > 0 && child as usize >= n_nodes;
                let bad_leaf = child <= 0 && (-child) as usize >= leaves.len();
                if bad_node || bad_leaf {
                    return Err(format!("child index {child} is out of range"));
                }
            }
            Ok((left, right, feature_index(n[2], n_features)?, n[3] as f32))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Weak::Tree {
        nodes: parsed,
        leaves,
    })
}

fn feature_index(v: f64, n_features: usize) -> Result<usize, String> {
    if v < 0.0 || v as usize >= n_features {
        return Err(format!("feature index {v} out of range (0..{n_features})"));
    }
    Ok(v as usize)
}

/// Summed-area tables, one row and column larger than the image.
struct Integral {
    stride: usize,
    sum: Vec<i32>,
    sq: Vec<f64>,
}

impl Integral {
    fn new(img: &[u8], w: usize, h: usize, squares: bool) -> Self {
        let stride = w + 1;
        let mut sum = vec![0i32; stride * (h + 1)];
        let mut sq = if squares {
            vec![0f64; stride * (h + 1)]
        } else {
            Vec::new()
        };
        for y in 0..h {
            let mut row = 0i32;
            let mut row_sq = 0f64;
            for x in 0..w {
                let p = img[y * w + x] as i32;
                row += p;
                sum[(y + 1) * stride + x + 1] = sum[y * stride + x + 1] + row;
                if squares {
                    row_sq += (p * p) as f64;
                    sq[(y + 1) * stride + x + 1] = sq[y * stride + x + 1] + row_sq;
                }
            }
        }
        Self { stride, sum, sq }
    }

    #[inline]
    fn sum(&self, x: i32, y: i32, w: i32, h: i32) -> i32 {
        let s = self.stride;
        let (x0, y0, x1, y1) = (x as usize, y as usize, (x + w) as usize, (y + h) as usize);
        self.sum[y1 * s + x1] - self.sum[y0 * s + x1] - self.sum[y1 * s + x0]
            + self.sum[y0 * s + x0]
    }

    fn sq_sum(&self, x: i32, y: i32, w: i32, h: i32) -> f64 {
        let s = self.stride;
        let (x0, y0, x1, y1) = (x as usize, y as usize, (x + w) as usize, (y + h) as usize);
        self.sq[y1 * s + x1] - self.sq[y0 * s + x1] - self.sq[y1 * s + x0] + self.sq[y0 * s + x0]
    }
}

/// OpenCV's LBP code: each of the 8 blocks around the centre block, clockwise from the top
/// left, sets its bit when its sum is at least the centre's.
#[inline]
fn lbp_code(ii: &Integral, x: i32, y: i32, w: i32, h: i32) -> usize {
    let block = |col: i32, row: i32| ii.sum(x + col * w, y + row * h, w, h);
    let c = block(1, 1);
    const ORDER: [(i32, i32, usize); 8] = [
        (0, 0, 128),
        (1, 0, 64),
        (2, 0, 32),
        (2, 1, 16),
        (2, 2, 8),
        (1, 2, 4),
        (0, 2, 2),
        (0, 1, 1),
    ];
    ORDER
        .iter()
        .filter(|&&(col, row, _)| block(col, row) >= c)
        .map(|&(_, _, bit)| bit)
        .sum()
}

/// Bilinear resize with pixel centres aligned (OpenCV's INTER_LINEAR when shrinking by < 2).
fn resize_bilinear(src: &[u8], w: usize, h: usize, dw: usize, dh: usize) -> Vec<u8> {
    if (w, h) == (dw, dh) {
        return src.to_vec();
    }
    let sx = w as f32 / dw as f32;
    let sy = h as f32 / dh as f32;
    let cols: Vec<(usize, usize, f32)> = (0..dw)
        .map(|x| {
            let fx = ((x as f32 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx as usize).min(w - 1);
            (x0, (x0 + 1).min(w - 1), fx - x0 as f32)
        })
        .collect();
    let mut out = Vec::with_capacity(dw * dh);
    for y in 0..dh {
        let fy = ((y as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy as usize).min(h - 1);
        let y1 = (y0 + 1).min(h - 1);
        let ty = fy - y0 as f32;
        let (r0, r1) = (&src[y0 * w..][..w], &src[y1 * w..][..w]);
        for &(x0, x1, tx) in &cols {
            let top = r0[x0] as f32 + (r0[x1] as f32 - r0[x0] as f32) * tx;
            let bottom = r1[x0] as f32 + (r1[x1] as f32 - r1[x0] as f32) * tx;
            out.push((top + (bottom - top) * ty + 0.5) as u8);
        }
    }
    out
}

/// OpenCV's `groupRectangles`: cluster similar boxes, average each cluster, keep clusters with
/// more than `threshold` members, drop boxes nested inside a stronger one.
fn group_rectangles(rects: &[Rect], threshold: u32, eps: f32) -> Vec<CascadeHit> {
    let n = rects.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let similar = |a: &Rect, b: &Rect| {
        let delta = eps * (a.width.min(b.width) + a.height.min(b.height)) as f32 * 0.5;
        (a.x - b.x).abs() as f32 <= delta
            && (a.y - b.y).abs() as f32 <= delta
            && (a.x + a.width - b.x - b.width).abs() as f32 <= delta
            && (a.y + a.height - b.y - b.height).abs() as f32 <= delta
    };
    for i in 0..n {
        for j in i + 1..n {
            if similar(&rects[i], &rects[j]) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut sums: Vec<([i64; 4], u32)> = vec![([0; 4], 0); n];
    for (i, r) in rects.iter().enumerate() {
        let root = find(&mut parent, i);
        let s = &mut sums[root];
        s.0[0] += r.x as i64;
        s.0[1] += r.y as i64;
        s.0[2] += r.width as i64;
        s.0[3] += r.height as i64;
        s.1 += 1;
    }
    let clusters: Vec<(Rect, u32)> = sums
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(s, count)| {
            let avg = |v: i64| (v as f64 / count as f64).round() as i32;
            (
                Rect {
                    x: avg(s[0]),
                    y: avg(s[1]),
                    width: avg(s[2]),
                    height: avg(s[3]),
                },
                count,
            )
        })
        .collect();
    let mut out = Vec::new();
    for (i, &(r1, n1)) in clusters.iter().enumerate() {
        if n1 <= threshold {
            continue;
        }
        let nested = clusters.iter().enumerate().any(|(j, &(r2, n2))| {
            if j == i || n2 <= threshold {
                return false;
            }
            let dx = (r2.width as f32 * eps).round() as i32;
            let dy = (r2.height as f32 * eps).round() as i32;
            r1.x >= r2.x - dx
                && r1.y >= r2.y - dy
                && r1.x + r1.width <= r2.x + r2.width + dx
                && r1.y + r1.height <= r2.y + r2.height + dy
                && (n2 > n1.max(3) || n1 < 3)
        });
        if !nested {
            out.push(CascadeHit {
                rect: r1,
                neighbors: n1,
            });
        }
    }
    out.sort_by_key(|hit| std::cmp::Reverse(hit.neighbors));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_lbp() -> &'static str {
        // One stage, one stump on the 3x3 block pattern at the window origin: accept when the
        // code is 0 (all eight neighbours darker than the centre), i.e. a bright centre.
        r#"<?xml version="1.0"?>
<opencv_storage><cascade><stageType>BOOST</stageType><featureType>LBP</featureType>
<height>6</height><width>6</width><stageNum>1</stageNum>
<stages><_><maxWeakCount>1</maxWeakCount><stageThreshold>0.</stageThreshold>
<weakClassifiers><_><internalNodes>0 -1 0 1 0 0 0 0 0 0 0</internalNodes>
<leafValues>1. -1.</leafValues></_></weakClassifiers></_></stages>
<features><_><rect>0 0 2 2</rect></_></features></cascade></opencv_storage>"#
    }

    #[test]
    fn lbp_code_matches_opencv_bit_order() {
        // 3x3 blocks of 1x1 pixels: only the top-left (bit 128) and left (bit 1) are >= centre.
        let img = [9u8, 0, 0, 9, 5, 0, 0, 0, 0];
        let ii = Integral::new(&img, 3, 3, false);
        assert_eq!(lbp_code(&ii, 0, 0, 1, 1), 129);
    }

    #[test]
    fn tiny_cascade_finds_the_bright_square() {
        let cascade = Cascade::from_xml(tiny_lbp(), Path::new("tiny.xml")).unwrap();
        let (w, h) = (40usize, 30usize);
        let mut img = vec![20u8; w * h];
        for y in 12..14 {
            for x in 22..24 {
                img[y * w + x] = 200;
            }
        }
        let params = CascadeParams {
            min_neighbors: 0,
            ..CascadeParams::default()
        };
        let hits = cascade.detect(w, h, &img, &params);
        assert!(!hits.is_empty());
        // Every accepted window puts the bright square in its centre block.
        for hit in &hits {
            let r = hit.rect;
            assert!(
                r.x <= 22 && r.x + r.width >= 24 && r.y <= 12 && r.y + r.height >= 14,
                "{r:?}"
            );
        }
    }

    #[test]
    fn bad_cascades_are_clear_errors() {
        let path = Path::new("bad.xml");
        let err = Cascade::from_xml("<opencv_storage><x/></opencv_storage>", path).unwrap_err();
        assert!(
            err.to_string().contains("bad.xml") && err.to_string().contains("<cascade>"),
            "{err}"
        );
        let out_of_window = tiny_lbp().replace("<rect>0 0 2 2</rect>", "<rect>2 2 2 2</rect>");
        let err = Cascade::from_xml(&out_of_window, path).unwrap_err();
        assert!(err.to_string().contains("leave the 6x6 window"), "{err}");
        let bad_index = tiny_lbp().replace("0 -1 0 1 0", "0 -1 7 1 0");
        let err = Cascade::from_xml(&bad_index, path).unwrap_err();
        assert!(err.to_string().contains("feature index"), "{err}");
    }

    #[test]
    fn grouping_merges_neighbours_and_drops_lonely_boxes() {
        let r = |x, y| Rect {
            x,
            y,
            width: 20,
            height: 20,
        };
        let rects = [r(10, 10), r(11, 10), r(10, 12), r(12, 11), r(100, 100)];
        let hits = group_rectangles(&rects, 3, 0.2);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].neighbors, 4);
        assert_eq!(
            hits[0].rect,
            Rect {
                x: 11,
                y: 11,
                width: 20,
                height: 20
            }
        );
    }
}
