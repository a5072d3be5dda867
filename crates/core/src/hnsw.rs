//! Approximate nearest-neighbour search for large tenants: a hierarchical navigable small world
//! graph (Malkov & Yashunin, 2016, arXiv:1603.09320). Similarity is the dot product of unit
//! vectors, higher is closer.
//!
//! Each row gets a level from a geometric distribution (here drawn from a hash of its row
//! number, so a build is deterministic); it is linked to its closest rows on every level up to
//! its own, chosen with the paper's heuristic (a candidate is kept only if it is closer to the
//! new row than to any neighbour already kept), which keeps links spread out across clusters.
//! A search descends greedily through the sparse upper levels and runs a beam of width `ef`
//! on level 0.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::retrieval::dot;
use crate::routing::stable_hash;

/// How a graph is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per row on the upper levels (twice as many on level 0).
    pub m: usize,
    /// Beam width while inserting: wider builds slower and finds better links.
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
        }
    }
}

/// A row and its similarity to the query, ordered by similarity.
#[derive(Debug, Clone, Copy)]
struct Scored(f32, u32);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// The graph over the rows of a row-major matrix `dims` wide; it holds links, not vectors.
#[derive(Debug, Clone)]
pub struct Hnsw {
    dims: usize,
    params: HnswParams,
    /// `links[row][level]`: the row's neighbours on that level.
    links: Vec<Vec<Vec<u32>>>,
    entry: u32,
}

impl Hnsw {
    /// Builds the graph over `vectors` (rows of `dims` unit-length values).
    pub fn build(vectors: &[f32], dims: usize, params: HnswParams) -> Self {
        assert!(dims > 0 && vectors.len().is_multiple_of(dims));
        assert!(params.m >= 2 && params.ef_construction >= 1);
        let mut graph = Self {
            dims,
            params,
            links: Vec::with_capacity(vectors.len() / dims),
            entry: 0,
        };
        let mut visited = Visited::default();
        for row in 0..vectors.len() / dims {
            graph.insert(vectors, row as u32, &mut visited);
        }
        graph
    }

    /// Rows in the graph.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Bytes of links held (what a cache should charge for the graph).
    pub fn bytes(&self) -> usize {
        self.links
            .iter()
            .flatten()
            .map(|l| l.capacity() * 4 + std::mem::size_of::<Vec<u32>>())
            .sum::<usize>()
            + self.links.len() * std::mem::size_of::<Vec<Vec<u32>>>()
    }

    /// About how many bytes a graph over `rows` rows holds, before building it.
    pub fn estimated_bytes(rows: usize, params: HnswParams) -> usize {
        // Level 0 has up to 2m links; the levels above add about m/(m-1) × m more on average.
        rows * (4 * (2 * params.m + params.m) + 2 * std::mem::size_of::<Vec<u32>>())
    }

    /// The `k` rows most similar to `query`: (row, score), best first. `ef` (at least `k`) is
    /// the search beam: wider is slower and finds more of the true top `k`.
    pub fn search(&self, vectors: &[f32], query: &[f32], k: usize, ef: usize) -> Vec<(usize, f32)> {
        if self.links.is_empty() || k == 0 {
            return Vec::new();
        }
        let mut visited = Visited::default();
        let mut entry = Scored(self.similarity(vectors, query, self.entry), self.entry);
        for level in (1..self.links[self.entry as usize].len()).rev() {
            entry = self.greedy(vectors, query, entry, level);
        }
        let mut found = self.search_level(vectors, query, &[entry], ef.max(k), 0, &mut visited);
        found.truncate(k);
        found.into_iter().map(|s| (s.1 as usize, s.0)).collect()
    }

    fn row<'v>(&self, vectors: &'v [f32], row: u32) -> &'v [f32] {
        let start = row as usize * self.dims;
        &vectors[start..start + self.dims]
    }

    fn similarity(&self, vectors: &[f32], query: &[f32], row: u32) -> f32 {
        dot(self.row(vectors, row), query)
    }

    fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            2 * self.params.m
        } else {
            self.params.m
        }
    }

    /// The row's level: geometric with ratio 1/m, from a hash of the row number.
    fn level_of(&self, row: u32) -> usize {
        let h = stable_hash(&row.to_le_bytes());
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        (-u.ln() / (self.params.m as f64).ln()) as usize
    }

    fn insert(&mut self, vectors: &[f32], row: u32, visited: &mut Visited) {
        let level = self.level_of(row);
        self.links.push(vec![Vec::new(); level + 1]);
        if row == 0 {
            return;
        }
        let query = self.row(vectors, row);
        let top = self.links[self.entry as usize].len() - 1;
        let mut entry = Scored(self.similarity(vectors, query, self.entry), self.entry);
        for l in (level + 1..=top).rev() {
            entry = self.greedy(vectors, query, entry, l);
        }
        let mut entries = vec![entry];
        for l in (0..=level.min(top)).rev() {
            let candidates = self.search_level(
                vectors,
                query,
                &entries,
                self.params.ef_construction,
                l,
                visited,
            );
            let chosen = self.select(vectors, &candidates, self.params.m);
            self.links[row as usize][l] = chosen.iter().map(|s| s.1).collect();
            for &Scored(score, neighbour) in &chosen {
                self.link(vectors, neighbour, Scored(score, row), l);
            }
            entries = candidates;
        }
        if level > top {
            self.entry = row;
        }
    }

    /// Adds `new` to `row`'s links on `level`, re-selecting them when there are too many.
    fn link(&mut self, vectors: &[f32], row: u32, new: Scored, level: usize) {
        let max = self.max_links(level);
        let links = &mut self.links[row as usize][level];
        if links.len() < max {
            links.push(new.1);
            return;
        }
        let base = self.row(vectors, row);
        let mut candidates: Vec<Scored> = self.links[row as usize][level]
            .iter()
            .map(|&n| Scored(self.similarity(vectors, base, n), n))
            .chain([new])
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let kept = self.select(vectors, &candidates, max);
        self.links[row as usize][level] = kept.into_iter().map(|s| s.1).collect();
    }

    /// The paper's neighbour heuristic over `candidates` (best first): keep a candidate only if
    /// it is closer to the base than to every neighbour kept so far; at most `m`.
    fn select(&self, vectors: &[f32], candidates: &[Scored], m: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        for &c in candidates {
            if kept.len() == m {
                break;
            }
            let v = self.row(vectors, c.1);
            if kept.iter().all(|k| dot(v, self.row(vectors, k.1)) < c.0) {
                kept.push(c);
            }
        }
        kept
    }

    /// Moves from `entry` to ever closer neighbours on `level` until none is closer.
    fn greedy(&self, vectors: &[f32], query: &[f32], mut entry: Scored, level: usize) -> Scored {
        loop {
            let best = self.links[entry.1 as usize][level]
                .iter()
                .map(|&n| Scored(self.similarity(vectors, query, n), n))
                .max()
                .filter(|b| b.0 > entry.0);
            match best {
                Some(b) => entry = b,
                None => return entry,
            }
        }
    }

    /// Beam search on one level: the `ef` closest rows found, best first.
    fn search_level(
        &self,
        vectors: &[f32],
        query: &[f32],
        entries: &[Scored],
        ef: usize,
        level: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        visited.reset(self.links.len());
        let mut frontier: BinaryHeap<Scored> = BinaryHeap::new();
        let mut found: BinaryHeap<Reverse<Scored>> = BinaryHeap::new();
        for &e in entries {
            if visited.insert(e.1) {
                frontier.push(e);
                found.push(Reverse(e));
            }
        }
        while found.len() > ef {
            found.pop();
        }
        while let Some(current) = frontier.pop() {
            let worst = found.peek().map_or(f32::NEG_INFINITY, |w| w.0.0);
            if current.0 < worst && found.len() >= ef {
                break;
            }
            for &n in &self.links[current.1 as usize][level] {
                if !visited.insert(n) {
                    continue;
                }
                let s = Scored(self.similarity(vectors, query, n), n);
                let worst = found.peek().map_or(f32::NEG_INFINITY, |w| w.0.0);
                if found.len() < ef || s.0 > worst {
                    frontier.push(s);
                    found.push(Reverse(s));
                    if found.len() > ef {
                        found.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = found.into_iter().map(|r| r.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }
}

/// Rows seen by one search, as a bit set reused across searches of a build.
#[derive(Default)]
struct Visited(Vec<u64>);

impl Visited {
    fn reset(&mut self, rows: usize) {
        self.0.clear();
        self.0.resize(rows.div_ceil(64), 0);
    }

    /// Marks `row`; false if it was marked already.
    fn insert(&mut self, row: u32) -> bool {
        let (word, bit) = (row as usize / 64, 1u64 << (row % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::top_k;
    use proptest::prelude::*;

    /// `rows` unit vectors in `clusters` clusters, each a `dims`-wide image of a point in a
    /// 12-dimensional space: text embeddings cluster by topic and vary in far fewer directions
    /// than they have dimensions.
    fn clustered(rows: usize, dims: usize, clusters: usize, seed: u64) -> Vec<f32> {
        const LATENT: usize = 12;
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        // The projection depends only on `dims`, so queries and rows share it.
        let mut fixed = 0x9e37_79b9_7f4a_7c15u64;
        let projection: Vec<f32> = (0..dims * LATENT)
            .map(|_| {
                fixed ^= fixed << 13;
                fixed ^= fixed >> 7;
                fixed ^= fixed << 17;
                (fixed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..LATENT).map(|_| next()).collect())
            .collect();
        let mut out = Vec::with_capacity(rows * dims);
        for r in 0..rows {
            let latent: Vec<f32> = centres[r % clusters]
                .iter()
                .map(|x| x + 0.3 * next())
                .collect();
            let mut v: Vec<f32> = projection
                .chunks_exact(LATENT)
                .map(|p| dot(p, &latent))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            out.extend(v);
        }
        out
    }

    /// Fraction of the exact top `k` that the graph finds, over `queries` of the rows.
    fn recall(vectors: &[f32], dims: usize, graph: &Hnsw, queries: &[f32], k: usize) -> f64 {
        let (mut hit, mut total) = (0, 0);
        for q in queries.chunks_exact(dims) {
            let exact: Vec<usize> = exact_top_k(vectors, dims, q, k);
            let approx: Vec<usize> = graph
                .search(vectors, q, k, 64)
                .into_iter()
                .map(|r| r.0)
                .collect();
            hit += exact.iter().filter(|r| approx.contains(r)).count();
            total += exact.len();
        }
        hit as f64 / total as f64
    }

    fn exact_top_k(vectors: &[f32], dims: usize, q: &[f32], k: usize) -> Vec<usize> {
        let mut all: Vec<(usize, f32)> = vectors
            .chunks_exact(dims)
            .enumerate()
            .map(|(i, v)| (i, dot(v, q)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.into_iter().take(k).map(|r| r.0).collect()
    }

    #[test]
    fn finds_almost_all_of_the_exact_top_ten() {
        let dims = crate::retrieval::DIMENSIONS;
        let vectors = clustered(3000, dims, 30, 7);
        let graph = Hnsw::build(&vectors, dims, HnswParams::default());
        let queries = clustered(100, dims, 30, 99);
        let r = recall(&vectors, dims, &graph, &queries, 10);
        assert!(r >= 0.95, "recall@10 {r}");
        // The same ranking as the exact search where both agree.
        let q = &queries[..dims];
        assert_eq!(
            graph.search(&vectors, q, 1, 64)[0].0,
            top_k(&vectors, q, 1)[0].0
        );
    }

    #[test]
    fn builds_the_same_graph_every_time() {
        let vectors = clustered(500, 16, 5, 3);
        let a = Hnsw::build(&vectors, 16, HnswParams::default());
        let b = Hnsw::build(&vectors, 16, HnswParams::default());
        assert_eq!(a.links, b.links);
        assert_eq!(a.entry, b.entry);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any small set: results are distinct rows, best first, at most k, scores exact, and
        /// every row is reachable (a search for a row's own vector finds it).
        #[test]
        fn results_are_sound_and_every_row_is_reachable(
            rows in 1usize..300,
            clusters in 1usize..8,
            seed in any::<u64>(),
            k in 1usize..20,
        ) {
            let dims = 8;
            let vectors = clustered(rows, dims, clusters, seed);
            let graph = Hnsw::build(&vectors, dims, HnswParams { m: 8, ef_construction: 64 });
            prop_assert_eq!(graph.len(), rows);
            for row in 0..rows {
                let q = &vectors[row * dims..(row + 1) * dims];
                let got = graph.search(&vectors, q, k, 64);
                prop_assert!(got.len() <= k && got.len() == k.min(rows));
                prop_assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
                let mut ids: Vec<usize> = got.iter().map(|g| g.0).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), got.len());
                for (r, s) in &got {
                    prop_assert_eq!(*s, dot(&vectors[r * dims..(r + 1) * dims], q));
                }
                prop_assert!(got[0].1 >= dot(q, q) - 1e-5, "row {} not found first", row);
            }
        }
    }
}
