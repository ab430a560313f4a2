//! A layered (Sugiyama-style) layout of the service graph, computed on the server.
//!
//! `rust-sugiyama` 0.4, the maintained crate for this, was evaluated first: it lays out 20 nodes
//! in 1 ms but did not finish a 50-node service graph in ten minutes, so the layout is ours and
//! deliberately simple: cycles broken by depth-first search, longest-path layers, barycenter
//! sweeps to reduce crossings, and wide layers wrapped into several rows so that 500 services
//! stay readable.

use std::collections::HashMap;

/// Where each node's centre is, and the size of the whole drawing.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub positions: HashMap<String, (f64, f64)>,
    pub width: f64,
    pub height: f64,
}

/// Horizontal room a node gets, from its label.
pub fn node_width(label: &str) -> f64 {
    (label.chars().count().min(28) as f64 * 7.5 + 24.0).max(60.0)
}

pub const NODE_HEIGHT: f64 = 36.0;
const ROW_GAP: f64 = 60.0;
const NODE_GAP: f64 = 24.0;
/// Room around the drawing: enough for the busiest nodes (drawn up to 15% larger) and the arrow
/// heads, and no more, so that the drawing fills its frame.
const MARGIN_X: f64 = 24.0;
const MARGIN_Y: f64 = 12.0;
/// A layer with more nodes is wrapped into rows of this many.
const MAX_ROW: usize = 24;
const SWEEPS: usize = 8;

/// Layers by longest path from the sources, after reversing the edges that close cycles.
fn layers(count: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut successors = vec![Vec::new(); count];
    let mut has_caller = vec![false; count];
    for &(from, to) in edges {
        if from != to {
            successors[from].push(to);
            has_caller[to] = true;
        }
    }
    // Depth-first search from the sources first, then from whatever is left (pure cycles):
    // an edge to a node still on the stack closes a cycle and is left out of the ranking.
    let mut state = vec![0u8; count]; // 0 new, 1 on the stack, 2 done
    let mut forward: Vec<Vec<usize>> = vec![Vec::new(); count];
    let starts = (0..count)
        .filter(|&n| !has_caller[n])
        .chain((0..count).filter(|&n| has_caller[n]));
    for start in starts {
        if state[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&to) = successors[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        forward[node].push(to);
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    2 => forward[node].push(to),
                    _ => {} // closes a cycle
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    // Longest path over the acyclic edges, in topological order.
    let mut indegree = vec![0usize; count];
    for targets in &forward {
        for &to in targets {
            indegree[to] += 1;
        }
    }
    let mut rank = vec![0usize; count];
    let mut ready: Vec<usize> = (0..count).filter(|&n| indegree[n] == 0).collect();
    while let Some(node) = ready.pop() {
        for &to in &forward[node] {
            rank[to] = rank[to].max(rank[node] + 1);
            indegree[to] -= 1;
            if indegree[to] == 0 {
                ready.push(to);
            }
        }
    }
    rank
}

/// Lays out `nodes` (names) connected by `edges` (indices into `nodes`), callers above callees.
pub fn layered(nodes: &[&str], edges: &[(usize, usize)]) -> Layout {
    let count = nodes.len();
    let rank = layers(count, edges);
    let depth = rank.iter().max().map_or(0, |r| r + 1);
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); depth];
    // Start from name order, so the same graph always gets the same drawing.
    let mut by_name: Vec<usize> = (0..count).collect();
    by_name.sort_by(|a, b| nodes[*a].cmp(nodes[*b]));
    for n in by_name {
        order[rank[n]].push(n);
    }
    let mut neighbours_up = vec![Vec::new(); count];
    let mut neighbours_down = vec![Vec::new(); count];
    for &(from, to) in edges {
        if from != to && rank[from] != rank[to] {
            let (upper, lower) = if rank[from] < rank[to] {
                (from, to)
            } else {
                (to, from)
            };
            neighbours_down[upper].push(lower);
            neighbours_up[lower].push(upper);
        }
    }
    let mut slot = vec![0f64; count];
    let number = |order: &[Vec<usize>], slot: &mut [f64]| {
        for layer in order {
            for (i, &n) in layer.iter().enumerate() {
                slot[n] = i as f64 / layer.len().max(1) as f64;
            }
        }
    };
    number(&order, &mut slot);
    for sweep in 0..SWEEPS {
        let downward = sweep % 2 == 0;
        let layer_indices: Vec<usize> = if downward {
            (1..depth).collect()
        } else {
            (0..depth.saturating_sub(1)).rev().collect()
        };
        for l in layer_indices {
            let neighbours = if downward {
                &neighbours_up
            } else {
                &neighbours_down
            };
            let mut keyed: Vec<(f64, usize)> = order[l]
                .iter()
                .map(|&n| {
                    let around = &neighbours[n];
                    let key = if around.is_empty() {
                        slot[n]
                    } else {
                        around.iter().map(|m| slot[*m]).sum::<f64>() / around.len() as f64
                    };
                    (key, n)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            order[l] = keyed.into_iter().map(|(_, n)| n).collect();
            for (i, &n) in order[l].iter().enumerate() {
                slot[n] = i as f64 / order[l].len().max(1) as f64;
            }
        }
    }
    let widths: Vec<f64> = nodes.iter().map(|n| node_width(n)).collect();
    let rows: Vec<&[usize]> = order
        .iter()
        .flat_map(|layer| layer.chunks(MAX_ROW))
        .collect();
    let row_width = |row: &[usize]| {
        row.iter().map(|n| widths[*n]).sum::<f64>() + NODE_GAP * row.len().saturating_sub(1) as f64
    };
    let widest = rows.iter().map(|r| row_width(r)).fold(0.0, f64::max);
    let mut positions = HashMap::with_capacity(count);
    for (r, row) in rows.iter().enumerate() {
        let y = MARGIN_Y + NODE_HEIGHT / 2.0 + r as f64 * (NODE_HEIGHT + ROW_GAP);
        let mut x = MARGIN_X + (widest - row_width(row)) / 2.0;
        for &n in *row {
            positions.insert(nodes[n].to_owned(), (x + widths[n] / 2.0, y));
            x += widths[n] + NODE_GAP;
        }
    }
    Layout {
        positions,
        width: widest + 2.0 * MARGIN_X,
        height: rows.len() as f64 * (NODE_HEIGHT + ROW_GAP) - ROW_GAP + 2.0 * MARGIN_Y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_above_callees_and_nodes_do_not_overlap() {
        let nodes = ["user", "gateway", "cart", "checkout", "db"];
        let edges = [(0, 1), (1, 2), (1, 3), (3, 2), (2, 4), (3, 4)];
        let layout = layered(&nodes, &edges);
        assert_eq!(layout.positions.len(), nodes.len());
        let y = |n: &str| layout.positions[n].1;
        for (from, to) in edges {
            assert!(
                y(nodes[from]) < y(nodes[to]),
                "{} above {}",
                nodes[from],
                nodes[to]
            );
        }
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                let (pa, pb) = (layout.positions[*a], layout.positions[*b]);
                let apart_x = (pa.0 - pb.0).abs() >= (node_width(a) + node_width(b)) / 2.0;
                let apart_y = (pa.1 - pb.1).abs() >= NODE_HEIGHT;
                assert!(apart_x || apart_y, "{a} and {b} overlap: {pa:?} {pb:?}");
            }
        }
        for (x, y) in layout.positions.values() {
            assert!(*x > 0.0 && *x < layout.width && *y > 0.0 && *y < layout.height);
        }
    }

    #[test]
    fn cycles_and_disconnected_parts_are_laid_out_too() {
        let nodes = ["a", "b", "c", "lonely"];
        let layout = layered(&nodes, &[(0, 1), (1, 2), (2, 0)]);
        assert_eq!(layout.positions.len(), 4);
        // The cycle is broken once: a, b and c still get a row each, in calling order.
        let y = |n: &str| layout.positions[n].1;
        assert!(y("a") < y("b") && y("b") < y("c"), "{:?}", layout.positions);
        let mut distinct: Vec<(i64, i64)> = layout
            .positions
            .values()
            .map(|(x, y)| (*x as i64, *y as i64))
            .collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "no two nodes in one place");
    }
}
