//! Who may read which camera.
//!
//! Deterministic: `owner-i` owns `cam-((i-1)*K+1)` ..= `cam-(i*K)`. With at least two owners,
//! the first camera of `owner-i` is also shared with `owner-(i+1)` (and `owner-N`'s with
//! `owner-1`), so every owner has one camera it reads but does not own.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// The owners, the cameras and the access between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    owners: Vec<String>,
    cameras: Vec<String>,
    /// owner -> cameras it owns or that are shared with it, in natural order.
    access: BTreeMap<String, Vec<String>>,
    /// camera -> the owner that owns it.
    owned_by: BTreeMap<String, String>,
}

impl Topology {
    /// `owners` owners with `cameras_per_owner` cameras each.
    pub fn new(owners: usize, cameras_per_owner: usize) -> Self {
        let owner_ids: Vec<String> = (1..=owners).map(|i| format!("owner-{i}")).collect();
        let cameras: Vec<String> = (1..=owners * cameras_per_owner)
            .map(|c| format!("cam-{c}"))
            .collect();
        let mut access: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut owned_by = BTreeMap::new();
        for (i, owner) in owner_ids.iter().enumerate() {
            let own = &cameras[i * cameras_per_owner..(i + 1) * cameras_per_owner];
            for camera in own {
                owned_by.insert(camera.clone(), owner.clone());
            }
            access
                .entry(owner.clone())
                .or_default()
                .extend_from_slice(own);
            if owners >= 2 {
                if let Some(first) = own.first() {
                    let neighbour = &owner_ids[(i + 1) % owners];
                    access
                        .entry(neighbour.clone())
                        .or_default()
                        .push(first.clone());
                }
            }
        }
        for list in access.values_mut() {
            list.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
            list.dedup();
        }
        Topology {
            owners: owner_ids,
            cameras,
            access,
            owned_by,
        }
    }

    /// `owner-1` .. `owner-N`.
    pub fn owners(&self) -> Vec<String> {
        self.owners.clone()
    }

    /// `cam-1` .. `cam-(N*K)`.
    pub fn cameras(&self) -> Vec<String> {
        self.cameras.clone()
    }

    /// Cameras `owner` may read (owned and shared with it), in natural order.
    pub fn cameras_of(&self, owner: &str) -> Vec<String> {
        self.access.get(owner).cloned().unwrap_or_default()
    }

    /// Whether `owner` may read `camera` (it owns it or it is shared with it).
    pub fn owns(&self, owner: &str, camera: &str) -> bool {
        self.access
            .get(owner)
            .is_some_and(|list| list.iter().any(|c| c == camera))
    }

    /// The owner that owns `camera` (not those it is shared with).
    pub fn owner_of(&self, camera: &str) -> Option<&str> {
        self.owned_by.get(camera).map(String::as_str)
    }

    /// Whether `camera` exists.
    pub fn has_camera(&self, camera: &str) -> bool {
        self.owned_by.contains_key(camera)
    }
}

/// Serialises as `{owner: [cameras]}`, owners in natural order.
impl Serialize for Topology {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.owners.len()))?;
        for owner in &self.owners {
            map.serialize_entry(owner, &self.cameras_of(owner))?;
        }
        map.end()
    }
}

/// Sorts `cam-2` before `cam-10`: the text before the trailing digits, then their value.
fn natural_key(id: &str) -> (&str, u64) {
    let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = id.split_at(id.len() - digits);
    (stem, number.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_own_consecutive_cameras_and_share_their_first_with_the_next() {
        let t = Topology::new(3, 2);
        assert_eq!(t.owners(), ["owner-1", "owner-2", "owner-3"]);
        assert_eq!(t.cameras().len(), 6);
        assert_eq!(t.cameras_of("owner-1"), ["cam-1", "cam-2", "cam-5"]);
        assert_eq!(t.cameras_of("owner-2"), ["cam-1", "cam-3", "cam-4"]);
        assert_eq!(t.cameras_of("owner-3"), ["cam-3", "cam-5", "cam-6"]);
        assert!(t.owns("owner-2", "cam-1"));
        assert!(!t.owns("owner-2", "cam-2"));
        assert!(!t.owns("owner-9", "cam-1"));
        assert_eq!(t.owner_of("cam-1"), Some("owner-1"));
        assert_eq!(t.owner_of("cam-7"), None);
    }

    #[test]
    fn a_single_owner_shares_nothing() {
        let t = Topology::new(1, 3);
        assert_eq!(t.cameras_of("owner-1"), ["cam-1", "cam-2", "cam-3"]);
    }

    #[test]
    fn cameras_sort_naturally() {
        let t = Topology::new(6, 2);
        assert_eq!(t.cameras_of("owner-1"), ["cam-1", "cam-2", "cam-11"]);
    }

    #[test]
    fn serialises_as_owner_to_cameras() {
        let json = serde_json::to_value(Topology::new(2, 1)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"owner-1": ["cam-1", "cam-2"], "owner-2": ["cam-1", "cam-2"]})
        );
    }

    #[test]
    fn empty_topology_does_not_panic() {
        let t = Topology::new(0, 3);
        assert!(t.owners().is_empty() && t.cameras().is_empty());
    }
}
