//! `RemoveDeadNodes`: drops every node no task depends on (features the
//! group does not use, their columns and tables), so the plan reads only
//! the columns the model needs.

use petgraph::visit::{Dfs, Reversed};

use super::{Pass, Patch};
use crate::ir::graph::{ModelGraph, Node};

/// Removes nodes from which no tower can be reached (losses and metrics of
/// live towers are kept).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RemoveDeadNodes;

impl Pass for RemoveDeadNodes {
    fn name(&self) -> &'static str {
        "RemoveDeadNodes"
    }

    fn next_patch(&self, graph: &ModelGraph) -> Option<Patch> {
        let g = &graph.graph;
        let mut live = std::collections::HashSet::new();
        for n in g.node_indices() {
            if matches!(g[n], Node::Tower(_)) {
                let rev = Reversed(g);
                let mut dfs = Dfs::new(rev, n);
                while let Some(x) = dfs.next(rev) {
                    live.insert(x);
                }
            }
        }
        let dead: Vec<_> = g
            .node_indices()
            .filter(|&n| {
                if live.contains(&n) {
                    return false;
                }
                // A loss or metric lives with its tower.
                let sink = matches!(g[n], Node::Loss { .. } | Node::Metric { .. });
                !(sink
                    && g.neighbors_directed(n, petgraph::Direction::Incoming)
                        .any(|p| live.contains(&p)))
            })
            .collect();
        if dead.is_empty() {
            return None;
        }
        let names: Vec<String> = dead.iter().take(4).map(|&n| g[n].name()).collect();
        let more = if dead.len() > 4 {
            format!(" and {} more", dead.len() - 4)
        } else {
            String::new()
        };
        Some(Patch {
            description: format!(
                "remove {} dead nodes ({}{more})",
                dead.len(),
                names.join(", ")
            ),
            remove_nodes: dead,
            ..Default::default()
        })
    }
}
