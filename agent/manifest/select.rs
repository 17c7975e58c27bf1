//! Choosing this node and the resources that apply to it.

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
    applies_to(scope.roles, scope.nodes, node)
}

/// The one "applies to this node" rule, for resources and for the `conda:` settings: with no
/// `roles` and no `nodes`, every node; else the nodes named and those with one of the roles.
pub fn applies_to(roles: &[String], nodes: &[String], node: &Node) -> bool {
    (roles.is_empty() && nodes.is_empty())
        || nodes.contains(&node.name)
        || roles.iter().any(|r| node.roles.contains(r))
}

/// A set of nodes (indices into [`Manifest::nodes`]) as one bit per node: at the limits (10,000
/// nodes, 10,000 resources) a set per resource is 12.5 MB in all, where a tree of indices was
/// over a gigabyte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    pub fn empty(nodes: usize) -> NodeSet {
        NodeSet {
            words: vec![0; nodes.div_ceil(64)],
        }
    }

    pub fn all(nodes: usize) -> NodeSet {
        let mut words = vec![u64::MAX; nodes / 64];
        if !nodes.is_multiple_of(64) {
            words.push((1 << (nodes % 64)) - 1);
        }
        NodeSet { words }
    }

    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Adds every node of `other` (a set over the same nodes).
    pub fn extend(&mut self, other: &NodeSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    pub fn is_disjoint(&self, other: &NodeSet) -> bool {
        self.words.iter().zip(&other.words).all(|(a, b)| a & b == 0)
    }

    pub fn is_subset(&self, other: &NodeSet) -> bool {
        self.words
            .iter()
            .zip(&other.words)
            .all(|(a, b)| a & !b == 0)
    }

    /// The nodes in `self` and not in `other`, in order.
    pub fn difference<'a>(&'a self, other: &'a NodeSet) -> impl Iterator<Item = usize> + 'a {
        (0..self.words.len() * 64).filter(move |&i| self.contains(i) && !other.contains(i))
    }
}

/// The nodes `spec` applies to.
pub fn nodes_of(m: &Manifest, spec: &ResourceSpec) -> NodeSet {
    let scope = spec.scope();
    if scope.roles.is_empty() && scope.nodes.is_empty() {
        return NodeSet::all(m.nodes.len());
    }
    let mut set = NodeSet::empty(m.nodes.len());
    for (i, n) in m.nodes.iter().enumerate() {
        if applies(spec, &n.value) {
            set.insert(i);
        }
    }
    set
}

impl Manifest {
    /// Every distinct set of resources the nodes get (indices in manifest order), with the nodes
    /// (indices) that get it, found from the resources' scopes in one pass: what validate checks
    /// the order of. Selecting a node at a time scans every resource for every node, which at
    /// the limits is 10^8 checks.
    pub fn selections(&self) -> Vec<(Vec<usize>, Vec<usize>)> {
        use std::collections::{BTreeMap, BTreeSet, HashMap};
        let mut everywhere = Vec::new();
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_role: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in self.resources.iter().enumerate() {
            let scope = r.value.scope();
            if scope.roles.is_empty() && scope.nodes.is_empty() {
                everywhere.push(i);
            }
            for n in scope.nodes {
                by_name.entry(n).or_default().push(i);
            }
            for role in scope.roles {
                by_role.entry(role).or_default().push(i);
            }
        }
        // Nodes named by the same resources and holding the same scoped roles get the same set.
        let mut by_key: BTreeMap<(&[usize], BTreeSet<&str>), Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let named = by_name
                .get(n.value.name.as_str())
                .map_or(&[][..], Vec::as_slice);
            let roles = n
                .value
                .roles
                .iter()
                .map(String::as_str)
                .filter(|r| by_role.contains_key(r))
                .collect();
            by_key.entry((named, roles)).or_default().push(i);
        }
        let mut by_resources: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        for ((named, roles), nodes) in by_key {
            let mut set: BTreeSet<usize> = everywhere.iter().chain(named).copied().collect();
            for role in roles {
                set.extend(&by_role[role]);
            }
            by_resources
                .entry(set.into_iter().collect())
                .or_default()
                .extend(nodes);
        }
        by_resources
            .into_iter()
            .map(|(resources, mut nodes)| {
                nodes.sort_unstable();
                (resources, nodes)
            })
            .collect()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_group_the_nodes_as_selecting_each_does() {
        let text = "nodes:\n  - {name: a, address: 10.0.0.1, roles: [w]}\n  - {name: b, address: 10.0.0.2, roles: [w, gpu]}\n  - {name: c, address: 10.0.0.3, roles: [w]}\n  - {name: d, address: 10.0.0.4}\nresources:\n  - directory: {path: /x}\n  - directory: {path: /y, roles: [gpu]}\n  - directory: {path: /z, nodes: [c], roles: [gpu]}\n  - directory: {path: /w, roles: [w]}\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, text).unwrap();
        let m = crate::manifest::parse(&path).unwrap();
        let mut expected: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
        for (i, n) in m.nodes.iter().enumerate() {
            let sel = m.select(Some(&n.value.name), "").unwrap();
            expected.entry(sel.resources).or_default().push(i);
        }
        let expected: Vec<(Vec<usize>, Vec<usize>)> = expected.into_iter().collect();
        assert_eq!(m.selections(), expected);
        assert_eq!(expected.len(), 4, "{expected:?}");
    }

    #[test]
    fn node_sets_hold_what_is_put_in() {
        for n in [0, 1, 63, 64, 65, 130] {
            let all = NodeSet::all(n);
            assert_eq!(all.difference(&NodeSet::empty(n)).count(), n);
            let mut odd = NodeSet::empty(n);
            (1..n).step_by(2).for_each(|i| odd.insert(i));
            assert!(odd.is_subset(&all) && (n < 2 || !all.is_subset(&odd)));
            let even: Vec<usize> = all.difference(&odd).collect();
            assert_eq!(even, (0..n).step_by(2).collect::<Vec<_>>());
            assert!(odd.is_disjoint(&NodeSet::empty(n)));
            assert_eq!(n < 2, odd.is_disjoint(&all));
        }
    }
}
