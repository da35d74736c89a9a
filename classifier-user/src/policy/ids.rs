//! Category and application ids that mean the same for as long as the flow table lives.
//!
//! The datapath stamps each flow with the category and application ids it was classified
//! with, once, and the pinned flow table outlives reloads and daemon restarts. If ids were
//! positions in the policy file, a reload that added or reordered categories would leave
//! running flows pointing at another category, and the wrong rule. So ids are given by
//! name: a name keeps the id it first got, a new name gets a new id (never one a removed
//! name had), and the registry is pinned beside the flow table (`CLASS_IDS`), where a
//! restarted daemon finds it.

use std::collections::BTreeMap;

use classifier_common::{
    classify::app,
    policy::{CLASS_NAME_MAX, ClassNameKey, class_kind},
};

/// Name → id, for categories and for policy applications.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassIds {
    categories: Registry,
    apps: Registry,
}

/// Names and their ids, and the highest id given (the next new name gets the one after),
/// kept so that giving n names ids takes time in proportion to n, not n².
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Registry {
    ids: BTreeMap<String, u16>,
    highest: Option<u16>,
}

impl Registry {
    fn insert(&mut self, name: String, id: u16) {
        self.ids.insert(name, id);
        self.highest = self.highest.max(Some(id));
    }
}

/// Why a name got no id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{0}` is longer than {CLASS_NAME_MAX} bytes")]
    TooLong(String),
    #[error(
        "no ids are left for new {0} (65,535 were given out since the flow table was made): \
         restart the daemon with a fresh pin directory"
    )]
    Exhausted(&'static str),
}

impl ClassIds {
    /// The id of category `name`: the one it already has, or the next unused one.
    pub fn category(&mut self, name: &str) -> Result<u16, IdError> {
        assign(&mut self.categories, name, 1, "categories")
    }

    /// The id of policy application `name`: the one it already has, or the next unused one.
    pub fn app(&mut self, name: &str) -> Result<u16, IdError> {
        assign(&mut self.apps, name, app::FIRST_POLICY_APP, "applications")
    }

    /// The name that had category id `id`, also when the policy no longer has it.
    pub fn category_name(&self, id: u16) -> Option<&str> {
        name_of(&self.categories, id)
    }

    /// The name that had application id `id`, also when the policy no longer has it.
    pub fn app_name(&self, id: u16) -> Option<&str> {
        name_of(&self.apps, id)
    }

    /// The category ids of names `known` does not list (removed from the policy).
    pub fn category_ids_except<'a>(
        &'a self,
        known: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = u16> + 'a {
        self.categories
            .ids
            .iter()
            .filter(move |(name, _)| !known(name))
            .map(|(_, id)| *id)
    }

    /// Every (key, id), as the `CLASS_IDS` map holds them.
    pub fn entries(&self) -> impl Iterator<Item = (ClassNameKey, u16)> + '_ {
        keyed(class_kind::CATEGORY, &self.categories).chain(keyed(class_kind::APP, &self.apps))
    }

    /// The registry the `CLASS_IDS` map holds. Entries that are not valid names are
    /// skipped: the map is the daemon's own, and a bad entry only costs an unused id.
    pub fn from_entries(entries: impl IntoIterator<Item = (ClassNameKey, u16)>) -> Self {
        let mut ids = Self::default();
        for (key, id) in entries {
            let Ok(name) = std::str::from_utf8(key.name_bytes()) else {
                continue;
            };
            let map = match key.kind {
                class_kind::CATEGORY => &mut ids.categories,
                class_kind::APP => &mut ids.apps,
                _ => continue,
            };
            map.insert(name.to_owned(), id);
        }
        ids
    }

    /// How many names have ids.
    pub fn len(&self) -> usize {
        self.categories.ids.len() + self.apps.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn assign(
    registry: &mut Registry,
    name: &str,
    first: u16,
    what: &'static str,
) -> Result<u16, IdError> {
    if let Some(id) = registry.ids.get(name) {
        return Ok(*id);
    }
    if name.len() > CLASS_NAME_MAX {
        return Err(IdError::TooLong(name.to_owned()));
    }
    let id = match registry.highest {
        None => first,
        Some(max) => max.checked_add(1).ok_or(IdError::Exhausted(what))?,
    };
    registry.insert(name.to_owned(), id);
    Ok(id)
}

fn keyed(kind: u8, registry: &Registry) -> impl Iterator<Item = (ClassNameKey, u16)> + '_ {
    registry
        .ids
        .iter()
        .filter_map(move |(name, id)| ClassNameKey::new(kind, name).map(|key| (key, *id)))
}

fn name_of(registry: &Registry, id: u16) -> Option<&str> {
    registry
        .ids
        .iter()
        .find(|(_, known)| **known == id)
        .map(|(name, _)| name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_registry_numbers_names_in_order() {
        let mut ids = ClassIds::default();
        assert_eq!(ids.category("streaming-video").unwrap(), 1);
        assert_eq!(ids.category("gaming").unwrap(), 2);
        assert_eq!(ids.app("youtube").unwrap(), app::FIRST_POLICY_APP);
        assert_eq!(ids.app("netflix").unwrap(), app::FIRST_POLICY_APP + 1);
    }

    #[test]
    fn names_keep_their_ids_and_new_names_never_take_an_old_one() {
        let mut ids = ClassIds::default();
        for name in ["a", "b", "c"] {
            ids.category(name).unwrap();
        }
        // As a reload sees it: "b" removed, "d" new, the rest reordered.
        let mut again = ids.clone();
        assert_eq!(again.category("d").unwrap(), 4);
        assert_eq!(again.category("c").unwrap(), 3);
        assert_eq!(again.category("a").unwrap(), 1);
        assert_eq!(
            again.category_name(2),
            Some("b"),
            "a removed name is remembered"
        );
    }

    #[test]
    fn the_registry_survives_its_map() {
        let mut ids = ClassIds::default();
        ids.category("file-sharing").unwrap();
        ids.app("bbc-iplayer").unwrap();
        let read_back = ClassIds::from_entries(ids.entries().collect::<Vec<_>>());
        assert_eq!(read_back, ids);
    }

    #[test]
    fn long_names_and_exhausted_ids_are_refused() {
        let mut ids = ClassIds::default();
        assert_eq!(
            ids.category(&"x".repeat(64)),
            Err(IdError::TooLong("x".repeat(64)))
        );
        assert!(ids.category(&"x".repeat(63)).is_ok());
        let mut full = ClassIds::from_entries([(
            ClassNameKey::new(class_kind::CATEGORY, "last").unwrap(),
            u16::MAX,
        )]);
        assert_eq!(
            full.category("one-more"),
            Err(IdError::Exhausted("categories"))
        );
    }
}
