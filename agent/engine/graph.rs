//! The order resources run in: explicit `after:` edges plus implicit ones (a file's owner needs the
//! user, a file needs its managed parent directories, a user needs its groups). Among resources
//! that are ready at the same time, manifest order wins, so the order is stable and predictable.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::path::Path;

use super::resource::Need;

/// A node of the graph: its id, explicit `after:` ids, and implicit needs.
pub struct Vertex<'a> {
    pub id: &'a str,
    pub after: &'a [String],
    pub needs: Vec<Need>,
}

/// The run order and, for each resource, the resources it depends on (indices into the input).
#[derive(Debug)]
pub struct Order {
    pub sequence: Vec<usize>,
    pub deps: Vec<BTreeSet<usize>>,
}

/// Orders `vertices`; `Err` names the resources caught in a cycle.
pub fn order(vertices: &[Vertex<'_>]) -> Result<Order, Vec<String>> {
    let by_id: HashMap<&str, usize> = vertices
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id, i))
        .collect();
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); vertices.len()];
    for (i, v) in vertices.iter().enumerate() {
        // after: may name a resource that does not run on this node; then there is nothing to wait for.
        deps[i].extend(
            v.after
                .iter()
                .filter_map(|a| by_id.get(a.as_str()).copied()),
        );
        for need in &v.needs {
            match need {
                Need::User(name) => deps[i].extend(by_id.get(format!("user:{name}").as_str())),
                Need::Group(name) => deps[i].extend(
                    by_id
                        .get(format!("group:{name}").as_str())
                        .or_else(|| by_id.get(format!("user:{name}").as_str())),
                ),
                Need::Env(path) => deps[i].extend(
                    by_id
                        .get(format!("venv:{path}").as_str())
                        .or_else(|| by_id.get(format!("conda_env:{path}").as_str())),
                ),
                Need::File(path) => {
                    deps[i].extend(by_id.get(format!("file:{path}").as_str()).or_else(|| {
                        let key = path.strip_suffix(".pub")?;
                        by_id.get(format!("ssh_key:{key}").as_str())
                    }))
                }
                Need::Directory(dir) => {
                    for (j, other) in vertices.iter().enumerate() {
                        if let Some(p) = other.id.strip_prefix("directory:")
                            && Path::new(dir).starts_with(p)
                        {
                            deps[i].insert(j);
                        }
                    }
                }
            }
        }
        deps[i].remove(&i);
    }
    let mut waiting: Vec<usize> = deps.iter().map(BTreeSet::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); vertices.len()];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            dependents[j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..vertices.len())
        .filter(|&i| waiting[i] == 0)
        .map(Reverse)
        .collect();
    let mut sequence = Vec::with_capacity(vertices.len());
    while let Some(Reverse(i)) = ready.pop() {
        sequence.push(i);
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    if sequence.len() < vertices.len() {
        let stuck = (0..vertices.len())
            .filter(|i| waiting[*i] > 0)
            .map(|i| vertices[i].id.to_owned())
            .collect();
        return Err(stuck);
    }
    Ok(Order { sequence, deps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v<'a>(id: &'a str, after: &'a [String], needs: Vec<Need>) -> Vertex<'a> {
        Vertex { id, after, needs }
    }

    #[test]
    fn implicit_edges_put_users_and_directories_first() {
        let none: Vec<String> = vec![];
        let vs = [
            v(
                "file:/data/x",
                &none,
                vec![Need::User("pyme".into()), Need::Directory("/data".into())],
            ),
            v("directory:/data", &none, vec![Need::User("pyme".into())]),
            v("user:pyme", &none, vec![]),
        ];
        let o = order(&vs).unwrap();
        assert_eq!(o.sequence, vec![2, 1, 0]);
        assert_eq!(o.deps[0], BTreeSet::from([1, 2]));
    }

    #[test]
    fn manifest_order_is_kept_when_nothing_forces_another() {
        let none: Vec<String> = vec![];
        let after_c = vec!["c".to_owned()];
        let vs = [
            v("a", &none, vec![]),
            v("b", &after_c, vec![]),
            v("c", &none, vec![]),
            v("d", &none, vec![]),
        ];
        assert_eq!(order(&vs).unwrap().sequence, vec![0, 2, 1, 3]);
    }

    #[test]
    fn a_group_need_is_met_by_the_user_that_creates_it() {
        let none: Vec<String> = vec![];
        let vs = [
            v("file:/x", &none, vec![Need::Group("pyme".into())]),
            v("user:pyme", &none, vec![]),
        ];
        assert_eq!(order(&vs).unwrap().sequence, vec![1, 0]);
    }

    #[test]
    fn a_file_need_is_met_by_its_file_or_the_key_whose_public_half_it_is() {
        let none: Vec<String> = vec![];
        let vs = [
            v(
                "authorized_keys:/h/.ssh/authorized_keys",
                &none,
                vec![
                    Need::File("/h/.ssh/id_ed25519.pub".into()),
                    Need::File("/srv/extra.pub".into()),
                ],
            ),
            v("file:/srv/extra.pub", &none, vec![]),
            v("ssh_key:/h/.ssh/id_ed25519", &none, vec![]),
            v("ssh_key:/h/.ssh/other", &none, vec![]),
        ];
        let o = order(&vs).unwrap();
        assert_eq!(o.deps[0], BTreeSet::from([1, 2]));
        assert_eq!(o.sequence, vec![1, 2, 0, 3]);
    }

    #[test]
    fn cycles_are_named() {
        let a = vec!["b".to_owned()];
        let b = vec!["a".to_owned()];
        let none: Vec<String> = vec![];
        let vs = [
            v("a", &a, vec![]),
            v("b", &b, vec![]),
            v("c", &none, vec![]),
        ];
        assert_eq!(
            order(&vs).unwrap_err(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn sibling_paths_are_not_parents() {
        let none: Vec<String> = vec![];
        let vs = [
            v(
                "file:/database/x",
                &none,
                vec![Need::Directory("/database".into())],
            ),
            v("directory:/data", &none, vec![]),
        ];
        assert!(order(&vs).unwrap().deps[0].is_empty());
    }
}
