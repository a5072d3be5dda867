//! Text → unit vectors of [`retrieval::DIMENSIONS`] values, for chunks at ingest and queries at search.
//!
//! Two embedders: the built-in hashed n-grams (`hashed`: no files, microseconds, lexical) and,
//! in builds with the `minilm` feature, the all-MiniLM-L6-v2 sentence model loaded from local
//! files (`minilm:DIR`: milliseconds per text on a CPU, semantic — "car" is near
//! "automobile"). Vectors of different embedders cannot be compared, so the store records
//! which one wrote its vectors and refuses another (see `Store::claim_embedder`).

use tenantscale_core::retrieval;

/// Why an embedder could not be set up or could not embed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedderError {
    #[error("--embedder {0:?}: expected `hashed` or `minilm:DIR`")]
    BadSpec(String),
    #[error("--embedder minilm: this build has no MiniLM; build with `--features minilm`")]
    NotBuilt,
    #[error("MiniLM model in {dir}: {message}")]
    Load { dir: String, message: String },
    #[error("MiniLM: {0}")]
    Embed(String),
}

/// An embedder, chosen with `--embedder`.
pub enum Embedder {
    Hashed,
    #[cfg(feature = "minilm")]
    MiniLm(Box<minilm::MiniLm>),
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Embedder {
    /// `hashed`, or `minilm:DIR` (a directory with `config.json`, `tokenizer.json` and
    /// `model.safetensors`).
    pub fn from_spec(spec: &str) -> Result<Self, EmbedderError> {
        match spec.split_once(':') {
            None if spec == "hashed" => Ok(Self::Hashed),
            #[cfg(feature = "minilm")]
            Some(("minilm", dir)) if !dir.is_empty() => {
                Ok(Self::MiniLm(Box::new(minilm::MiniLm::load(dir.as_ref())?)))
            }
            #[cfg(not(feature = "minilm"))]
            Some(("minilm", _)) => Err(EmbedderError::NotBuilt),
            _ => Err(EmbedderError::BadSpec(spec.to_string())),
        }
    }

    /// The name the store records with the vectors this embedder writes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hashed => "hashed-ngrams-384",
            #[cfg(feature = "minilm")]
            Self::MiniLm(_) => "all-MiniLM-L6-v2",
        }
    }

    /// Whether embedding one text takes long enough to keep it off async threads.
    pub fn is_slow(&self) -> bool {
        !matches!(self, Self::Hashed)
    }

    /// The unit vector of `text` (all zeros for text with nothing to embed).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedderError> {
        Ok(self.embed_all(&[text])?.remove(0))
    }

    /// The unit vectors of `texts`, in order (batched where the model allows).
    pub fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        match self {
            Self::Hashed => Ok(texts.iter().map(|t| retrieval::embed(t)).collect()),
            #[cfg(feature = "minilm")]
            Self::MiniLm(model) => model.embed_all(texts),
        }
    }
}

#[cfg(feature = "minilm")]
mod minilm {
    //! all-MiniLM-L6-v2 (sentence-transformers; Apache-2.0): a 6-layer BERT, mean pooling over
    //! the attention mask, L2 normalisation — the model's own pipeline (`modules.json`).

    use super::EmbedderError;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};
    use std::path::Path;
    use tenantscale_core::retrieval::DIMENSIONS;
    use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

    /// Tokens per text the model was trained on (`sentence_bert_config.json`).
    const MAX_TOKENS: usize = 256;
    /// Texts per forward pass: bounds the activations held at once.
    const BATCH: usize = 32;

    pub struct MiniLm {
        model: BertModel,
        tokenizer: Tokenizer,
    }

    impl MiniLm {
        pub fn load(dir: &Path) -> Result<Self, EmbedderError> {
            let fail = |message: String| EmbedderError::Load {
                dir: dir.display().to_string(),
                message,
            };
            let config = std::fs::read_to_string(dir.join("config.json"))
                .map_err(|e| fail(format!("config.json: {e}")))?;
            let config: Config =
                serde_json::from_str(&config).map_err(|e| fail(format!("config.json: {e}")))?;
            if config.hidden_size != DIMENSIONS {
                return Err(fail(format!(
                    "hidden size {} (the store's vectors have {DIMENSIONS})",
                    config.hidden_size
                )));
            }
            let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
                .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
            // The file pads every text to 128 tokens; pad each batch to its longest instead.
            tokenizer.with_padding(Some(PaddingParams::default()));
            tokenizer
                .with_truncation(Some(TruncationParams {
                    max_length: MAX_TOKENS,
                    ..TruncationParams::default()
                }))
                .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
            let weights = dir.join("model.safetensors");
            // Read, not memory-mapped: candle's mmap loader is `unsafe` (the file must not
            // change while mapped), and 87 MB read once at start is cheap.
            let bytes =
                std::fs::read(&weights).map_err(|e| fail(format!("model.safetensors: {e}")))?;
            let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
                .map_err(|e| fail(format!("model.safetensors: {e}")))?;
            let model = BertModel::load(vb, &config).map_err(|e| fail(format!("model: {e}")))?;
            Ok(Self { model, tokenizer })
        }

        pub fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(BATCH) {
                out.extend(
                    self.embed_batch(batch)
                        .map_err(|e| EmbedderError::Embed(e.to_string()))?,
                );
            }
            Ok(out)
        }

        fn embed_batch(
            &self,
            texts: &[&str],
        ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
            let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
            let rows = encodings.len();
            let width = encodings.first().map_or(0, |e| e.get_ids().len());
            let ids: Vec<u32> = encodings
                .iter()
                .flat_map(|e| e.get_ids().to_vec())
                .collect();
            let mask: Vec<u32> = encodings
                .iter()
                .flat_map(|e| e.get_attention_mask().to_vec())
                .collect();
            let device = &self.model.device;
            let ids = Tensor::from_vec(ids, (rows, width), device)?;
            let mask = Tensor::from_vec(mask, (rows, width), device)?;
            let token_types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
            // Mean over the real tokens only, then unit length.
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f32::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
            Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
        }
    }
}
