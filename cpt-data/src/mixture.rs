//! Weighted mixtures of sequence sources (e.g. 80% new domain, 20% general text), and the
//! [`SequenceSource`] trait every stream of packed sequences implements, so mixtures nest.
//!
//! Draw `i` picks its component from `SplitMix64::derive(seed, &[i])` alone, so the choice needs
//! no RNG state: the draw counter plus each component's cursor is the whole position.

use cpt_core::{SplitMix64, TokenSequence};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::packing::{PackedCursor, PackedSource};
use crate::subset::SubsetCursor;

/// An endless, resumable stream of equal-length token sequences.
pub trait SequenceSource: Send {
    /// The next sequence.
    fn next_sequence(&mut self) -> Result<TokenSequence>;
    /// The position after the last sequence returned.
    fn cursor(&self) -> SourceCursor;
    /// Continue from a cursor taken from a source built the same way.
    fn seek(&mut self, cursor: &SourceCursor) -> Result<()>;
    /// Which component the last sequence came from, for a source of several (a mixture).
    fn last_component(&self) -> Option<usize> {
        None
    }
}

/// The position of any [`SequenceSource`], tagged by kind in its serialised form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum SourceCursor {
    /// Position of a [`PackedSource`].
    Packed(PackedCursor),
    /// Position of a [`Mixture`].
    Mixture(MixtureCursor),
    /// Position of a [`crate::SubsetSource`].
    Subset(SubsetCursor),
}

impl SourceCursor {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Packed(_) => "Packed",
            Self::Mixture(_) => "Mixture",
            Self::Subset(_) => "Subset",
        }
    }
}

/// Position of a [`Mixture`]: draws made so far and each component's own position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureCursor {
    /// Sequences drawn so far; the next draw is number `draws`.
    pub draws: u64,
    /// Cursors of the components, in construction order.
    pub components: Vec<SourceCursor>,
}

impl SequenceSource for PackedSource {
    fn next_sequence(&mut self) -> Result<TokenSequence> {
        PackedSource::next_sequence(self)
    }

    fn cursor(&self) -> SourceCursor {
        SourceCursor::Packed(PackedSource::cursor(self))
    }

    fn seek(&mut self, cursor: &SourceCursor) -> Result<()> {
        match cursor {
            SourceCursor::Packed(c) => PackedSource::seek(self, c),
            other => Err(DataError::BadCursor {
                message: format!("a {} cursor given to a packed source", other.kind()),
            }),
        }
    }
}

/// Draws each sequence from one of its components, chosen at random in proportion to weights.
pub struct Mixture {
    components: Vec<Box<dyn SequenceSource>>,
    /// Normalised weights, summing to 1.
    weights: Vec<f64>,
    /// Upper ends of each component's interval in `[0, 1)`.
    cumulative: Vec<f64>,
    seed: u64,
    draws: u64,
    /// The component of the last draw (not part of the position: it describes the last
    /// sequence, and only per-source accounting reads it, right after the draw).
    last: Option<usize>,
}

impl std::fmt::Debug for Mixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixture")
            .field("weights", &self.weights)
            .field("seed", &self.seed)
            .field("draws", &self.draws)
            .finish()
    }
}

impl Mixture {
    /// A mixture of `(source, weight)` pairs; weights must be positive and finite and are
    /// normalised to sum to 1. Give the mixture a seed distinct from its components' seeds so
    /// that its draws and their shuffles use unrelated streams.
    pub fn new(components: Vec<(Box<dyn SequenceSource>, f64)>, seed: u64) -> Result<Self> {
        if components.is_empty() {
            return Err(DataError::InvalidOption {
                name: "components",
                message: "a mixture needs at least one source".into(),
            });
        }
        if let Some((i, (_, w))) = components
            .iter()
            .enumerate()
            .find(|(_, (_, w))| !(w.is_finite() && *w > 0.0))
        {
            return Err(DataError::InvalidOption {
                name: "weights",
                message: format!("weight {i} is {w}; weights must be positive and finite"),
            });
        }
        let total: f64 = components.iter().map(|(_, w)| w).sum();
        let weights: Vec<f64> = components.iter().map(|(_, w)| w / total).collect();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            acc += w;
            cumulative.push(acc);
        }
        Ok(Self {
            components: components.into_iter().map(|(s, _)| s).collect(),
            weights,
            cumulative,
            seed,
            draws: 0,
            last: None,
        })
    }

    /// The normalised weights, in construction order.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Sequences drawn so far.
    pub fn draws(&self) -> u64 {
        self.draws
    }

    /// The component that draw `draw` takes from.
    pub fn component_of_draw(&self, draw: u64) -> usize {
        let u = SplitMix64::derive(self.seed, &[draw]).next_f64();
        // Rounding can leave the last cumulative weight a hair under 1: fall back to the last.
        self.cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.components.len() - 1)
    }

    /// The next sequence from the component chosen for this draw.
    pub fn next_sequence(&mut self) -> Result<TokenSequence> {
        let component = self.component_of_draw(self.draws);
        let sequence = self.components[component].next_sequence()?;
        self.draws += 1;
        self.last = Some(component);
        Ok(sequence)
    }

    /// The position after the last sequence returned.
    pub fn cursor(&self) -> MixtureCursor {
        MixtureCursor {
            draws: self.draws,
            components: self.components.iter().map(|c| c.cursor()).collect(),
        }
    }

    /// Continue from `cursor`, taken from a mixture built the same way.
    pub fn seek(&mut self, cursor: &MixtureCursor) -> Result<()> {
        if cursor.components.len() != self.components.len() {
            return Err(DataError::BadCursor {
                message: format!(
                    "cursor has {} mixture components, the mixture has {}",
                    cursor.components.len(),
                    self.components.len()
                ),
            });
        }
        for (component, c) in self.components.iter_mut().zip(&cursor.components) {
            component.seek(c)?;
        }
        self.draws = cursor.draws;
        Ok(())
    }
}

impl SequenceSource for Mixture {
    fn next_sequence(&mut self) -> Result<TokenSequence> {
        Mixture::next_sequence(self)
    }

    fn last_component(&self) -> Option<usize> {
        self.last
    }

    fn cursor(&self) -> SourceCursor {
        SourceCursor::Mixture(Mixture::cursor(self))
    }

    fn seek(&mut self, cursor: &SourceCursor) -> Result<()> {
        match cursor {
            SourceCursor::Mixture(c) => Mixture::seek(self, c),
            other => Err(DataError::BadCursor {
                message: format!("a {} cursor given to a mixture", other.kind()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_text::DocCursor;

    /// A source that emits `[tag, n]` for its n-th sequence; its cursor is `n` in `row_pos`.
    struct Counter {
        tag: u32,
        n: usize,
    }

    impl SequenceSource for Counter {
        fn next_sequence(&mut self) -> Result<TokenSequence> {
            self.n += 1;
            Ok(vec![self.tag, self.n as u32].into())
        }
        fn cursor(&self) -> SourceCursor {
            SourceCursor::Packed(PackedCursor {
                doc: DocCursor {
                    epoch: 0,
                    unit_pos: 0,
                    row_pos: self.n,
                    ..Default::default()
                },
                pending: vec![],
                pending_mask: None,
            })
        }
        fn seek(&mut self, cursor: &SourceCursor) -> Result<()> {
            let SourceCursor::Packed(c) = cursor else {
                panic!("wrong kind")
            };
            self.n = c.doc.row_pos;
            Ok(())
        }
    }

    fn mixture(weights: &[f64], seed: u64) -> Mixture {
        let components = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                (
                    Box::new(Counter {
                        tag: i as u32,
                        n: 0,
                    }) as Box<dyn SequenceSource>,
                    w,
                )
            })
            .collect();
        Mixture::new(components, seed).unwrap()
    }

    #[test]
    fn proportions_converge_to_weights() {
        let mut m = mixture(&[4.0, 1.0], 7);
        assert_eq!(m.weights(), &[0.8, 0.2]);
        let draws = 5000;
        let first = (0..draws)
            .filter(|_| {
                let s = m.next_sequence().unwrap();
                assert_eq!(m.last_component(), Some(s.tokens[0] as usize));
                s.tokens[0] == 0
            })
            .count();
        let share = first as f64 / draws as f64;
        assert!((share - 0.8).abs() < 0.02, "share of component 0: {share}");
    }

    #[test]
    fn resumed_mixture_continues_the_same_stream() {
        let mut whole = mixture(&[0.5, 0.3, 0.2], 11);
        let expected: Vec<TokenSequence> =
            (0..60).map(|_| whole.next_sequence().unwrap()).collect();
        let mut first = mixture(&[0.5, 0.3, 0.2], 11);
        let head: Vec<TokenSequence> = (0..25).map(|_| first.next_sequence().unwrap()).collect();
        let json = serde_json::to_string(&SequenceSource::cursor(&first)).unwrap();
        let cursor: SourceCursor = serde_json::from_str(&json).unwrap();
        let mut resumed = mixture(&[0.5, 0.3, 0.2], 11);
        SequenceSource::seek(&mut resumed, &cursor).unwrap();
        let tail: Vec<TokenSequence> = (0..35).map(|_| resumed.next_sequence().unwrap()).collect();
        assert_eq!([head, tail].concat(), expected);
    }

    #[test]
    fn nested_mixtures_resume_too() {
        let build = || {
            let inner: Box<dyn SequenceSource> = Box::new(mixture(&[1.0, 1.0], 3));
            let outer_leaf: Box<dyn SequenceSource> = Box::new(Counter { tag: 9, n: 0 });
            Mixture::new(vec![(inner, 1.0), (outer_leaf, 1.0)], 4).unwrap()
        };
        let mut whole = build();
        let expected: Vec<TokenSequence> =
            (0..40).map(|_| whole.next_sequence().unwrap()).collect();
        let mut first = build();
        for _ in 0..17 {
            first.next_sequence().unwrap();
        }
        let mut resumed = build();
        resumed.seek(&first.cursor()).unwrap();
        let tail: Vec<TokenSequence> = (0..23).map(|_| resumed.next_sequence().unwrap()).collect();
        assert_eq!(tail, expected[17..]);
    }

    #[test]
    fn bad_weights_and_mismatched_cursors_are_rejected() {
        let leaf = || Box::new(Counter { tag: 0, n: 0 }) as Box<dyn SequenceSource>;
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Mixture::new(vec![(leaf(), 1.0), (leaf(), w)], 0).unwrap_err();
            assert!(
                matches!(
                    err,
                    DataError::InvalidOption {
                        name: "weights",
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert!(Mixture::new(vec![], 0).is_err());
        let mut m = mixture(&[1.0, 1.0], 0);
        let three = mixture(&[1.0, 1.0, 1.0], 0).cursor();
        assert!(matches!(m.seek(&three), Err(DataError::BadCursor { .. })));
        let packed = Counter { tag: 0, n: 0 }.cursor();
        assert!(matches!(
            SequenceSource::seek(&mut m, &packed),
            Err(DataError::BadCursor { .. })
        ));
    }
}
