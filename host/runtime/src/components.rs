//! The components a job's operators come from: the job's own (whose plan
//! function built the graph) and any linked to it under a name. A plan node
//! naming `LINK/OPERATOR` runs OPERATOR of the component linked as LINK, so
//! one job can feed a Go parser into a Rust aggregator. Each component's
//! operators run in instances of that component; records cross from one to
//! the other as bytes on an ordinary channel.

use std::collections::BTreeMap;

use sluice_types::split_operator;
use sluice_wasm::App;

/// The longest link name.
const MAX_LINK_NAME: usize = 64;

/// The most components one job may link (each is loaded, and compiled on
/// every TaskManager that runs its operators).
pub const MAX_LINKS: usize = 8;

/// A job's components.
#[derive(Clone)]
pub struct Components {
    main: App,
    linked: BTreeMap<String, App>,
}

impl Components {
    /// A job made of one component.
    pub fn single(main: App) -> Self {
        Components {
            main,
            linked: BTreeMap::new(),
        }
    }

    /// The job's own component with others linked under names (letters,
    /// digits, `-` and `_`; each name once).
    pub fn linked(main: App, linked: Vec<(String, App)>) -> Result<Self, String> {
        check_link_count(linked.len())?;
        let mut map = BTreeMap::new();
        for (name, app) in linked {
            check_link_name(&name)?;
            if map.insert(name.clone(), app).is_some() {
                return Err(format!("the link name `{name}` is given twice"));
            }
        }
        Ok(Components { main, linked: map })
    }

    /// The job's own component: its plan function builds the job.
    pub fn main(&self) -> &App {
        &self.main
    }

    /// The linked components by name.
    pub fn linked_apps(&self) -> impl Iterator<Item = (&str, &App)> {
        self.linked.iter().map(|(n, a)| (n.as_str(), a))
    }

    /// The component a plan's operator name runs in, and the operator's name
    /// there.
    pub fn resolve<'a>(&self, operator: &'a str) -> Result<(&App, &'a str), String> {
        match split_operator(operator) {
            (None, name) => Ok((&self.main, name)),
            (Some(link), name) => match self.linked.get(link) {
                Some(app) => Ok((app, name)),
                None => Err(self.unknown_link(link)),
            },
        }
    }

    fn unknown_link(&self, link: &str) -> String {
        if self.linked.is_empty() {
            format!("no component is linked to the job as `{link}`")
        } else {
            format!(
                "no component is linked to the job as `{link}`; linked: {}",
                self.linked.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// Checks how many components a job links.
pub fn check_link_count(n: usize) -> Result<(), String> {
    if n > MAX_LINKS {
        return Err(format!(
            "the job links {n} components; at most {MAX_LINKS} may be linked"
        ));
    }
    Ok(())
}

/// Checks a link name: what a plan writes before the `/`.
pub fn check_link_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LINK_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a link name: use 1 to {MAX_LINK_NAME} letters, digits, `-` or `_`",
            name.chars().take(80).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_link_name;

    #[test]
    fn link_names_are_short_words() {
        for good in ["agg", "rust-count", "go_parser", "A1"] {
            assert_eq!(check_link_name(good), Ok(()), "{good}");
        }
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(65), "a=b"] {
            let e = check_link_name(bad).expect_err(bad);
            assert!(e.contains("not a link name"), "{e}");
        }
    }
}
