//! The workspace as `cargo metadata` describes it.

use anyhow::{Context, Result};
use serde_json::Value;
use xshell::{Shell, cmd};

/// One workspace member, with what the matrix needs to know of it.
#[derive(Debug, Clone)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) manifest_path: String,
    pub(crate) has_lib: bool,
    /// `[package.metadata.capsule] feature-sets`: the meaningful combinations.
    feature_sets: Vec<Vec<String>>,
    /// `[package.metadata.capsule] slow-feature`: added in the slow tier.
    slow_feature: Option<String>,
    /// Dependencies on other workspace members: (name, kind). Read by the tidy tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) workspace_deps: Vec<(String, String)>,
    /// Every dependency: (name, kind). Read by the tidy tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) all_deps: Vec<(String, String)>,
}

impl Package {
    /// Feature sets to run, always starting with the default set.
    pub(crate) fn feature_sets(&self, slow: bool) -> Vec<Vec<String>> {
        let mut sets = vec![Vec::new()];
        for set in &self.feature_sets {
            if !set.is_empty() && !sets.contains(set) {
                sets.push(set.clone());
            }
        }
        if slow && let Some(feature) = &self.slow_feature {
            for set in &mut sets {
                set.push(feature.clone());
            }
        }
        sets
    }
}

pub(crate) fn workspace_packages(sh: &Shell) -> Result<Vec<Package>> {
    let json = cmd!(sh, "cargo metadata --format-version 1 --no-deps --locked").quiet().read()?;
    parse(&json)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

pub(crate) fn parse(json: &str) -> Result<Vec<Package>> {
    let meta: Value = serde_json::from_str(json).context("cargo metadata output")?;
    let members = strings(&meta["workspace_members"]);
    let packages = meta["packages"].as_array().context("packages")?;
    let member_names: Vec<String> = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.iter().any(|m| m == id)))
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut out = Vec::new();
    for p in packages {
        let Some(name) = p["name"].as_str() else {
            continue;
        };
        if !member_names.iter().any(|m| m == name) {
            continue;
        }
        let kinds = |kind: &str| {
            p["targets"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == kind))))
        };
        let capsule = &p["metadata"]["capsule"];
        let deps = p["dependencies"].as_array().cloned().unwrap_or_default();
        out.push(Package {
            name: name.to_owned(),
            manifest_path: p["manifest_path"].as_str().unwrap_or_default().to_owned(),
            has_lib: kinds("lib"),
            feature_sets: capsule["feature-sets"]
                .as_array()
                .map(|a| a.iter().map(strings).collect())
                .unwrap_or_default(),
            slow_feature: capsule["slow-feature"].as_str().map(str::to_owned),
            workspace_deps: deps
                .iter()
                .filter_map(|d| {
                    let dep = d["name"].as_str()?;
                    member_names
                        .iter()
                        .any(|m| m == dep)
                        .then(|| (dep.to_owned(), d["kind"].as_str().unwrap_or("normal").to_owned()))
                })
                .collect(),
            all_deps: deps
                .iter()
                .filter_map(|d| {
                    let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                    Some((d["name"].as_str()?.to_owned(), kind))
                })
                .collect(),
        });
    }
    Ok(out)
}
