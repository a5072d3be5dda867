//! Retrieval without downloads: a built-in embedder, a chunker and exact top-k search.
//!
//! The embedder hashes word unigrams, word bigrams and character trigrams of each word into a
//! fixed-size vector (signed feature hashing), then L2-normalises it. It is deterministic, fast
//! and needs no files. It is lexical, not semantic: it matches shared words and word parts
//! ("scaling" ~ "scale"), not synonyms ("car" is not near "automobile"). A sentence-embedding
//! model can replace it behind the same vectors.

use crate::routing::stable_hash;

/// Vector dimensions (the same as all-MiniLM-L6-v2, so stored vectors keep their shape).
pub const DIMENSIONS: usize = 384;

const STOP_WORDS: [&str; 24] = [
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on",
    "or", "that", "the", "this", "to", "was", "what", "with", "how",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

fn add(v: &mut [f32], feature: &str, weight: f32) {
    let h = stable_hash(feature.as_bytes());
    let i = (h % DIMENSIONS as u64) as usize;
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    v[i] += sign * weight;
}

/// The built-in embedding of `text`: unit length, or all zeros for text without words.
pub fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DIMENSIONS];
    let ws = words(text);
    // One reused buffer for the feature strings (the query path embeds on every request).
    let mut feature = String::new();
    let mut chars: Vec<char> = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        add(&mut v, w, 1.0);
        if let Some(next) = ws.get(i + 1) {
            feature.clear();
            feature.extend([w.as_str(), " ", next.as_str()]);
            add(&mut v, &feature, 0.5);
        }
        chars.clear();
        chars.push('<');
        chars.extend(w.chars());
        chars.push('>');
        for tri in chars.windows(3) {
            feature.clear();
            feature.extend(tri);
            add(&mut v, &feature, 0.25);
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Splits text into chunks of about `target` characters on paragraph, then sentence, bounds.
pub fn chunk(text: &str, target: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if para.len() <= target {
            pieces.push(para.to_string());
            continue;
        }
        let mut current = String::new();
        for sentence in para.split_inclusive(['.', '!', '?']) {
            if !current.is_empty() && current.len() + sentence.len() > target {
                pieces.push(std::mem::take(&mut current).trim().to_string());
            }
            current.push_str(sentence);
        }
        if !current.trim().is_empty() {
            pieces.push(current.trim().to_string());
        }
    }
    // Merge short neighbours so a chunk carries context.
    let mut chunks: Vec<String> = Vec::new();
    for p in pieces {
        match chunks.last_mut() {
            Some(last) if last.len() + p.len() + 2 <= target => {
                last.push_str("\n\n");
                last.push_str(&p);
            }
            _ => chunks.push(p),
        }
    }
    chunks
}

/// Dot product (vectors are unit length, so this is cosine similarity). Eight independent
/// partial sums: a single running sum is a serial chain of float adds the compiler may not
/// reorder, while eight lanes map onto SIMD registers.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let (a8, a_rest) = a.split_at(a.len() / LANES * LANES);
    let (b8, b_rest) = b.split_at(a8.len().min(b.len()));
    let mut acc = [0.0f32; LANES];
    for (x, y) in a8.chunks_exact(LANES).zip(b8.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The `k` best rows of `vectors` (row-major, `DIMENSIONS` wide) for `query`: (row, score),
/// best first.
pub fn top_k(vectors: &[f32], query: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (row, v) in vectors.chunks_exact(DIMENSIONS).enumerate() {
        let score = dot(v, query);
        if best.len() < k || score > best[best.len() - 1].1 {
            let at = best.partition_point(|(_, s)| *s >= score);
            best.insert(at, (row, score));
            best.truncate(k);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_unit_and_deterministic() {
        let a = embed("Kubernetes scales pods horizontally");
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, embed("Kubernetes scales pods horizontally"));
        assert!(embed("?!").iter().all(|x| *x == 0.0));
        assert!(
            dot(&a, &embed("scaling pods in kubernetes"))
                > dot(&a, &embed("quarterly revenue of the bank"))
        );
    }

    #[test]
    fn chunks_respect_the_target_and_keep_the_text() {
        let text = "First paragraph.\n\nSecond one. It has two sentences.\n\n".to_string()
            + &"Long sentence here. ".repeat(40);
        let chunks = chunk(&text, 200);
        assert!(chunks.iter().all(|c| c.len() <= 220), "{chunks:?}");
        let joined: String = chunks.concat();
        assert!(
            joined.contains("First paragraph.")
                && joined.matches("Long sentence here.").count() == 40
        );
    }

    #[test]
    fn top_k_orders_by_score() {
        let docs = [
            "gold tier tenants get more weight",
            "pods drain on sigterm",
            "cache hits are fast",
        ];
        let vectors: Vec<f32> = docs.iter().flat_map(|d| embed(d)).collect();
        let hits = top_k(&vectors, &embed("what happens to pods on SIGTERM"), 2);
        assert_eq!(hits[0].0, 1);
        assert!(hits[0].1 >= hits[1].1);
    }

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for n in [0, 1, 7, 8, 9, 17, 383, 384] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 10.0).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "length {n}");
        }
    }

    /// The features written out plainly: stored vectors depend on them, so a faster `embed`
    /// must produce exactly the same vector.
    fn reference_embed(text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; DIMENSIONS];
        let ws = words(text);
        for (i, w) in ws.iter().enumerate() {
            add(&mut v, w, 1.0);
            if let Some(next) = ws.get(i + 1) {
                add(&mut v, &format!("{w} {next}"), 0.5);
            }
            let chars: Vec<char> = format!("<{w}>").chars().collect();
            for tri in chars.windows(3) {
                add(&mut v, &tri.iter().collect::<String>(), 0.25);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    #[test]
    fn embeddings_keep_their_features() {
        for text in [
            "",
            "a",
            "The horizontal pod autoscaler adjusts replicas.",
            "Größe über Tenants — naïve café, 東京 ok",
        ] {
            assert_eq!(embed(text), reference_embed(text), "{text:?}");
        }
    }
}
