//! The scheduler's configuration file, in the shape of Kubernetes'
//! `KubeSchedulerConfiguration` (`kubescheduler.config.k8s.io/v1`): profiles, each with a
//! scheduler name, the filter and score plugins it runs (defaults, minus `disabled`, plus
//! `enabled`, with weights) and plugin arguments (NodeResourcesFit's scoring strategy);
//! and `percentageOfNodesToScore`. Every field is checked; an error names the field.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use crate::plugins::node_resources_fit::Strategy;

/// The API version this file format speaks.
pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
/// The kind.
pub const KIND: &str = "KubeSchedulerConfiguration";

/// Filter plugins, in the order they run by default.
pub const FILTERS: [&str; 7] = [
    "NodeUnschedulable",
    "NodeName",
    "NodeReadiness",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
];

/// Score plugins with their default weights.
pub const SCORES: [(&str, i64); 5] = [
    ("NodeResourcesFit", 1),
    ("NodeResourcesBalancedAllocation", 1),
    ("NodeAffinity", 2),
    ("TaintToleration", 3),
    ("SelectorSpread", 2),
];

/// The highest weight a score plugin may have.
pub const MAX_WEIGHT: i64 = 100;

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Malformed YAML, an unknown field or a wrong type.
    #[error("{path}: {field}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Where in the document.
        field: String,
        /// Why.
        reason: String,
    },
    /// A value that cannot work.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    api_version: Option<String>,
    kind: Option<String>,
    percentage_of_nodes_to_score: Option<u32>,
    #[serde(default)]
    profiles: Vec<FileProfile>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileProfile {
    scheduler_name: Option<String>,
    #[serde(default)]
    plugins: FilePlugins,
    #[serde(default)]
    plugin_config: Vec<FilePluginConfig>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePlugins {
    #[serde(default)]
    filter: FilePluginSet,
    #[serde(default)]
    score: FilePluginSet,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePluginSet {
    #[serde(default)]
    enabled: Vec<FilePlugin>,
    #[serde(default)]
    disabled: Vec<FilePlugin>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePlugin {
    name: String,
    weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePluginConfig {
    name: String,
    args: FitArgs,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FitArgs {
    scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScoringStrategy {
    #[serde(rename = "type")]
    type_: Strategy,
}

/// One scheduling profile, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Pods whose spec.schedulerName is this use the profile.
    pub scheduler_name: String,
    /// Filter plugins in order.
    pub filters: Vec<String>,
    /// Score plugins with their weights.
    pub scores: Vec<(String, i64)>,
    /// NodeResourcesFit's scoring strategy.
    pub strategy: Strategy,
}

impl ProfileConfig {
    /// Kubernetes' default plugins and weights under `name`.
    pub fn default_named(name: &str) -> Self {
        ProfileConfig {
            scheduler_name: name.to_string(),
            filters: FILTERS.iter().map(|s| s.to_string()).collect(),
            scores: SCORES.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            strategy: Strategy::LeastAllocated,
        }
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    /// The profiles; the first names the leader-election Lease.
    pub profiles: Vec<ProfileConfig>,
    /// Percentage of nodes to find feasible before scoring; None adapts to cluster size.
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl Default for Configuration {
    fn default() -> Self {
        Configuration {
            profiles: vec![ProfileConfig::default_named("default-scheduler")],
            percentage_of_nodes_to_score: None,
        }
    }
}

impl Configuration {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a configuration document; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let file: FileConfig = match serde_path_to_error::deserialize(de) {
            Ok(f) => f,
            Err(e) => {
                let field = e.path().to_string();
                let reason = e.into_inner().to_string();
                // The YAML error repeats the enclosing path; ours is the exact field.
                let reason = match reason.split_once(": ") {
                    Some((prefix, rest)) if field.starts_with(prefix) => rest.to_string(),
                    _ => reason,
                };
                return Err(ConfigError::Parse {
                    path: path.to_string(),
                    field: if field == "." {
                        "(document)".into()
                    } else {
                        field
                    },
                    reason,
                });
            }
        };
        Self::validate(file)
    }

    fn validate(file: FileConfig) -> Result<Self, ConfigError> {
        if let Some(v) = file.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(invalid("apiVersion", format!("{v:?} is not {API_VERSION}")));
        }
        if let Some(k) = file.kind.as_deref().filter(|k| *k != KIND) {
            return Err(invalid("kind", format!("{k:?} is not {KIND}")));
        }
        if let Some(p) = file.percentage_of_nodes_to_score.filter(|p| *p > 100) {
            return Err(invalid(
                "percentageOfNodesToScore",
                format!("{p} is not between 0 and 100"),
            ));
        }
        let mut profiles = Vec::new();
        let mut names = HashSet::new();
        for (i, p) in file.profiles.into_iter().enumerate() {
            let at = format!("profiles[{i}]");
            let profile = validate_profile(p, &at)?;
            if !names.insert(profile.scheduler_name.clone()) {
                return Err(invalid(
                    format!("{at}.schedulerName"),
                    format!("{:?} is used by another profile", profile.scheduler_name),
                ));
            }
            profiles.push(profile);
        }
        if profiles.is_empty() {
            profiles.push(ProfileConfig::default_named("default-scheduler"));
        }
        Ok(Configuration {
            profiles,
            // 0 means "adapt", as in Kubernetes.
            percentage_of_nodes_to_score: file.percentage_of_nodes_to_score.filter(|p| *p > 0),
        })
    }
}

fn validate_profile(p: FileProfile, at: &str) -> Result<ProfileConfig, ConfigError> {
    let name = p
        .scheduler_name
        .unwrap_or_else(|| "default-scheduler".into());
    if name.is_empty() {
        return Err(invalid(format!("{at}.schedulerName"), "must not be empty"));
    }
    let mut profile = ProfileConfig::default_named(&name);

    let set = &p.plugins.filter;
    let field = format!("{at}.plugins.filter");
    for (j, d) in set.disabled.iter().enumerate() {
        if d.name == "*" {
            profile.filters.clear();
            continue;
        }
        known(&d.name, &FILTERS, &format!("{field}.disabled[{j}].name"))?;
        profile.filters.retain(|f| *f != d.name);
    }
    for (j, e) in set.enabled.iter().enumerate() {
        known(&e.name, &FILTERS, &format!("{field}.enabled[{j}].name"))?;
        if e.weight.is_some() {
            return Err(invalid(
                format!("{field}.enabled[{j}].weight"),
                "filter plugins have no weight",
            ));
        }
        if !profile.filters.contains(&e.name) {
            profile.filters.push(e.name.clone());
        }
    }

    let set = &p.plugins.score;
    let field = format!("{at}.plugins.score");
    let score_names: Vec<&str> = SCORES.iter().map(|(n, _)| *n).collect();
    for (j, d) in set.disabled.iter().enumerate() {
        if d.name == "*" {
            profile.scores.clear();
            continue;
        }
        known(
            &d.name,
            &score_names,
            &format!("{field}.disabled[{j}].name"),
        )?;
        profile.scores.retain(|(n, _)| *n != d.name);
    }
    for (j, e) in set.enabled.iter().enumerate() {
        known(&e.name, &score_names, &format!("{field}.enabled[{j}].name"))?;
        let default = SCORES
            .iter()
            .find(|(n, _)| *n == e.name)
            .map_or(1, |(_, w)| *w);
        let weight = e.weight.unwrap_or(default);
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(invalid(
                format!("{field}.enabled[{j}].weight"),
                format!("{weight} is not between 1 and {MAX_WEIGHT}"),
            ));
        }
        match profile.scores.iter_mut().find(|(n, _)| *n == e.name) {
            Some(s) => s.1 = weight,
            None => profile.scores.push((e.name.clone(), weight)),
        }
    }

    for (j, c) in p.plugin_config.into_iter().enumerate() {
        if c.name != "NodeResourcesFit" {
            return Err(invalid(
                format!("{at}.pluginConfig[{j}].name"),
                format!(
                    "{:?} takes no arguments (only NodeResourcesFit does)",
                    c.name
                ),
            ));
        }
        if let Some(s) = c.args.scoring_strategy {
            profile.strategy = s.type_;
        }
    }
    Ok(profile)
}

fn known(name: &str, names: &[&str], field: &str) -> Result<(), ConfigError> {
    if names.contains(&name) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("unknown plugin {name:?} (known: {})", names.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Configuration, String> {
        Configuration::parse(text, "sched.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_file_is_kubernetes_defaults() {
        assert_eq!(parse("{}"), Ok(Configuration::default()));
    }

    #[test]
    fn plugins_are_disabled_enabled_and_reweighted() {
        let c = parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 20
profiles:
- schedulerName: packer
  plugins:
    filter:
      disabled: [{name: NodePorts}]
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 5}, {name: SelectorSpread}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
- schedulerName: default-scheduler
"#,
        )
        .expect("valid");
        assert_eq!(c.percentage_of_nodes_to_score, Some(20));
        let p = &c.profiles[0];
        assert_eq!(p.scheduler_name, "packer");
        assert!(!p.filters.contains(&"NodePorts".to_string()));
        assert_eq!(
            p.scores,
            vec![
                ("NodeResourcesFit".to_string(), 5),
                ("SelectorSpread".to_string(), 2)
            ]
        );
        assert_eq!(p.strategy, Strategy::MostAllocated);
        assert_eq!(
            c.profiles[1],
            ProfileConfig::default_named("default-scheduler")
        );
    }

    #[test]
    fn mistakes_name_the_field() {
        for (text, want) in [
            (
                "profiles: [{plugins: {score: {enabled: [{name: Magic}]}}}]",
                "profiles[0].plugins.score.enabled[0].name: unknown plugin \"Magic\"",
            ),
            (
                "profiles: [{plugins: {score: {enabled: [{name: NodeAffinity, weight: 0}]}}}]",
                "profiles[0].plugins.score.enabled[0].weight: 0 is not between 1 and 100",
            ),
            (
                "profiles: [{schedulerName: a}, {schedulerName: a}]",
                "profiles[1].schedulerName: \"a\" is used by another profile",
            ),
            (
                "percentageOfNodesToScore: 101",
                "percentageOfNodesToScore: 101 is not",
            ),
            (
                "profiles: [{schedulerNme: a}]",
                "sched.yaml: profiles[0].schedulerNme: unknown field `schedulerNme`",
            ),
            (
                "percentageOfNodesToScore: lots",
                "sched.yaml: percentageOfNodesToScore: invalid type",
            ),
            (
                "profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Random}}}]}]",
                "sched.yaml: profiles[0].pluginConfig[0].args.scoringStrategy.type: unknown variant `Random`",
            ),
            (
                "kind: Deployment",
                "kind: \"Deployment\" is not KubeSchedulerConfiguration",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }
}
