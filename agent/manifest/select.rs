//! Choosing this node and the resources that apply to it.

use std::collections::BTreeSet;

use super::Manifest;
use super::model::{Node, ResourceSpec};

/// The node being reconciled and the indices (into [`Manifest::resources`]) of its resources, in
/// manifest order.
#[derive(Debug)]
pub struct NodeSelection<'m> {
    pub node: &'m Node,
    pub resources: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(
        "this host is `{host}`, which is not a node in the manifest (nodes: {known})\n  hint: pass --node NAME to choose one, or add this host to nodes:"
    )]
    UnknownHost { host: String, known: String },
    #[error(
        "--node `{name}` is not a node in the manifest (nodes: {known})\n  hint: use one of the names under nodes:"
    )]
    UnknownNode { name: String, known: String },
}

/// Whether `spec` applies to `node`: unscoped resources apply everywhere, scoped ones to the
/// named nodes and to nodes with one of the named roles.
pub fn applies(spec: &ResourceSpec, node: &Node) -> bool {
    let scope = spec.scope();
    (scope.roles.is_empty() && scope.nodes.is_empty())
        || scope.nodes.contains(&node.name)
        || scope.roles.iter().any(|r| node.roles.contains(r))
}

/// The indices of the nodes `spec` applies to.
pub fn nodes_of(m: &Manifest, spec: &ResourceSpec) -> BTreeSet<usize> {
    m.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| applies(spec, &n.value))
        .map(|(i, _)| i)
        .collect()
}

impl Manifest {
    /// Picks the node named `requested`, or the one named after this host (`hostname`, short form).
    pub fn select(
        &self,
        requested: Option<&str>,
        hostname: &str,
    ) -> Result<NodeSelection<'_>, SelectError> {
        let known = || {
            self.nodes
                .iter()
                .map(|n| n.value.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let wanted = requested.unwrap_or_else(|| hostname.split('.').next().unwrap_or(hostname));
        let node = self
            .nodes
            .iter()
            .map(|n| &n.value)
            .find(|n| n.name == wanted)
            .ok_or_else(|| match requested {
                Some(name) => SelectError::UnknownNode {
                    name: name.to_owned(),
                    known: known(),
                },
                None => SelectError::UnknownHost {
                    host: wanted.to_owned(),
                    known: known(),
                },
            })?;
        let resources = self
            .resources
            .iter()
            .enumerate()
            .filter(|(_, r)| applies(&r.value, node))
            .map(|(i, _)| i)
            .collect();
        Ok(NodeSelection { node, resources })
    }
}
