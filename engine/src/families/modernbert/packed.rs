//! ModernBERT's layers on the packed kernels (the default CPU path where built with oneDNN).
//!
//! Sequences are concatenated into one (tokens × hidden) matrix with no padding: the projections
//! ([`PackedLinear`], the residual adds fused into their GEMMs) and the norms, RoPE and GeGLU run
//! over real tokens only; attention, with its sliding window in local layers, runs within each
//! sequence. Precision is compute precision (see [`crate::kernels`]): bf16 and int8 change the
//! GEMMs' inputs and weights only; the residual stream, norms, RoPE, softmax and GeGLU stay f32.
//! In bf16 the GeGLU writes the next GEMM's bf16 input directly.

use std::sync::Mutex;

use candle_core::Tensor;

use super::config::{Activation, LayerKind, ModernBertConfig};
use super::weights::{EncoderWeights, LayerWeights, NormWeights};
use crate::kernels::geglu::{geglu, geglu_bf16, GateActivation};
use crate::kernels::layer_norm::layer_norm;
use crate::kernels::rope::RopeCache;
use crate::kernels::windowed_attention::{attention, AttentionShape};
use crate::kernels::{sized, Ctx, Epilogue, LinearScratch, PackedLinear};
use crate::modes::Precision;
use crate::EngineError;

/// The GeGLU activation the packed kernel has for `act`, if any.
pub(super) fn gate_activation(act: Activation) -> Option<GateActivation> {
    match act {
        Activation::Gelu => Some(GateActivation::Gelu),
        Activation::GeluTanh => Some(GateActivation::GeluTanh),
        Activation::Silu => Some(GateActivation::Silu),
        Activation::Relu => Some(GateActivation::Relu),
        Activation::Tanh => None,
    }
}

/// Whether the packed path runs `precision` for a model with this activation.
pub(super) fn supports(precision: Precision, act: Activation) -> bool {
    gate_activation(act).is_some() && PackedLinear::supports(precision)
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

/// A LayerNorm's parameters in f32.
struct Norm {
    gamma: Vec<f32>,
    beta: Option<Vec<f32>>,
}

impl Norm {
    fn new(w: &NormWeights) -> Result<Self, EngineError> {
        Ok(Self {
            gamma: f32_values(&w.weight)?,
            beta: w.bias.as_ref().map(f32_values).transpose()?,
        })
    }

    fn bytes(&self) -> usize {
        (self.gamma.len() + self.beta.as_ref().map_or(0, Vec::len)) * 4
    }

    fn apply(&self, x: &[f32], eps: f32, out: &mut [f32]) -> Result<(), EngineError> {
        layer_norm(x, &self.gamma, self.beta.as_deref(), eps, out)
    }
}

struct Layer {
    kind: LayerKind,
    /// `None` in layer 0.
    attn_norm: Option<Norm>,
    wqkv: PackedLinear,
    /// Accumulates into the residual stream.
    wo: PackedLinear,
    mlp_norm: Norm,
    wi: PackedLinear,
    /// Accumulates into the residual stream.
    mlp_wo: PackedLinear,
}

impl Layer {
    fn new(w: &LayerWeights, precision: Precision) -> Result<Self, EngineError> {
        let residual = Epilogue {
            accumulate: true,
            ..Default::default()
        };
        let plain = Epilogue::default();
        let linear = |l: &super::weights::LinearWeights, epilogue| {
            PackedLinear::new(&l.weight, l.bias.as_ref(), precision, epilogue)
        };
        Ok(Self {
            kind: w.kind,
            attn_norm: w.attn_norm.as_ref().map(Norm::new).transpose()?,
            wqkv: linear(&w.wqkv, plain)?,
            wo: linear(&w.wo, residual)?,
            mlp_norm: Norm::new(&w.mlp_norm)?,
            wi: linear(&w.wi, plain)?,
            mlp_wo: linear(&w.mlp_wo, residual)?,
        })
    }

    fn weight_bytes(&self) -> usize {
        self.attn_norm.as_ref().map_or(0, Norm::bytes)
            + self.mlp_norm.bytes()
            + [&self.wqkv, &self.wo, &self.wi, &self.mlp_wo]
                .iter()
                .map(|l| l.weight_bytes())
                .sum::<usize>()
    }
}

/// Activation buffers, kept between passes (fresh multi-megabyte allocations cost page faults).
#[derive(Default)]
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    gated: Vec<f32>,
    inter: Vec<f32>,
    inter_bf16: Vec<u16>,
    positions: Vec<u32>,
    linear: LinearScratch,
}

/// What one pass drives exclusively: oneDNN handles are used by one thread at a time.
struct State {
    ctx: Ctx,
    layers: Vec<Layer>,
    scratch: Scratch,
}

/// ModernBERT's layers and final norm over packed sequences.
pub(super) struct PackedLayers {
    state: Mutex<State>,
    final_norm: Norm,
    precision: Precision,
    act: GateActivation,
    eps: f32,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    intermediate: usize,
    half_window: usize,
    global_rope: RopeCache,
    local_rope: RopeCache,
    implementation: String,
    /// Bytes of the layers' weights as stored.
    weight_bytes: usize,
}

impl PackedLayers {
    /// Builds the layers from f32 `weights` in `precision` (f32, bf16 or int8); fails where the
    /// kernels are unavailable or cannot run the model.
    pub(super) fn new(
        weights: &EncoderWeights,
        cfg: &ModernBertConfig,
        precision: Precision,
        global_rope: RopeCache,
        local_rope: RopeCache,
    ) -> Result<Self, EngineError> {
        let act = gate_activation(cfg.hidden_activation).ok_or_else(|| {
            EngineError::InvalidModel(format!(
                "hidden_activation {:?} has no packed kernel",
                cfg.hidden_activation
            ))
        })?;
        let ctx = Ctx::new(cfg.num_attention_heads, cfg.head_dim(), cfg.norm_eps as f32)?;
        let layers = weights
            .layers
            .iter()
            .map(|w| Layer::new(w, precision))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let implementation = layers
            .first()
            .map(|l| l.wqkv.implementation())
            .unwrap_or_default();
        let weight_bytes = layers.iter().map(Layer::weight_bytes).sum();
        Ok(Self {
            state: Mutex::new(State {
                ctx,
                layers,
                scratch: Scratch::default(),
            }),
            weight_bytes,
            final_norm: Norm::new(&weights.final_norm)?,
            precision,
            act,
            eps: cfg.norm_eps as f32,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
            half_window: cfg.half_window(),
            global_rope,
            local_rope,
            implementation,
        })
    }

    /// The oneDNN kernel family in use (for logs and `/info`).
    pub(super) fn implementation(&self) -> &str {
        &self.implementation
    }

    /// Bytes of the layers' and the final norm's weights as stored.
    pub(super) fn weight_bytes(&self) -> usize {
        self.weight_bytes + self.final_norm.bytes()
    }

    /// Runs every layer and the final norm over `x` (tokens × hidden: the embeddings' output),
    /// in place; sequence i owns rows `offsets[i]..offsets[i + 1]`.
    pub(super) fn forward(&self, x: &mut [f32], offsets: &[usize]) -> Result<(), EngineError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| EngineError::Internal("packed ModernBERT state poisoned".into()))?;
        let State {
            ctx,
            layers,
            scratch,
        } = &mut *state;
        let (h, i) = (self.hidden, self.intermediate);
        let m = x.len() / h;
        if m * h != x.len()
            || offsets.first() != Some(&0)
            || offsets.last() != Some(&m)
            || offsets.windows(2).any(|w| w[1] < w[0])
        {
            return Err(EngineError::Internal(
                "packed offsets do not cover the rows".into(),
            ));
        }
        let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let global_rope = self.global_rope.covering(longest)?;
        let local_rope = self.local_rope.covering(longest)?;
        let positions = sized(&mut scratch.positions, m);
        for w in offsets.windows(2) {
            for (p, slot) in positions[w[0]..w[1]].iter_mut().enumerate() {
                *slot = p as u32;
            }
        }
        let normed = sized(&mut scratch.normed, m * h);
        let qkv = sized(&mut scratch.qkv, m * 3 * h);
        let attended = sized(&mut scratch.attended, m * h);
        let gated = sized(&mut scratch.gated, m * 2 * i);
        let linear = &mut scratch.linear;
        for layer in layers.iter() {
            // x += Wo(attention(rope(Wqkv(attn_norm(x)))))
            let input: &[f32] = match &layer.attn_norm {
                Some(norm) => {
                    norm.apply(x, self.eps, normed)?;
                    normed
                }
                None => x,
            };
            layer.wqkv.forward(ctx, input, qkv, linear)?;
            let (rope, half_window) = match layer.kind {
                LayerKind::Global => (&global_rope, None),
                LayerKind::Local => (&local_rope, Some(self.half_window)),
            };
            // Queries and keys: the first 2 × heads heads of each row.
            rope.apply(qkv, 3 * h, 0, 2 * self.heads, positions)?;
            let shape = AttentionShape {
                heads: self.heads,
                head_dim: self.head_dim,
                half_window,
            };
            attention(qkv, offsets, shape, attended)?;
            layer.wo.forward(ctx, attended, x, linear)?;
            // x += Wo(act(input) ⊙ gate), (input, gate) = Wi(mlp_norm(x))
            layer.mlp_norm.apply(x, self.eps, normed)?;
            layer.wi.forward(ctx, normed, gated, linear)?;
            if self.precision == Precision::Bf16 {
                let inter = sized(&mut scratch.inter_bf16, m * i);
                geglu_bf16(gated, i, self.act, inter)?;
                ctx.gemm(layer.mlp_wo.gemm(), m, inter, x)?;
            } else {
                let inter = sized(&mut scratch.inter, m * i);
                geglu(gated, i, self.act, inter)?;
                layer.mlp_wo.forward(ctx, inter, x, linear)?;
            }
        }
        normed.copy_from_slice(x);
        self.final_norm.apply(normed, self.eps, x)
    }
}
