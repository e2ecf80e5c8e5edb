//! EasyRec's `fg.json` (its feature generation): where EasyRec keeps each
//! feature's expression (`user:age`, `item:price`), and a lookup feature's
//! `map` and `key`. With it, `plec convert` writes those instead of
//! `user:<input column>`, as TorchEasyRec's converter does. A sequence
//! group's features (`sequence_name` entries) get their expressions and
//! the group's length and delimiter, and are nested in one
//! `sequence_feature` per group, as TorchEasyRec's converter does.

use std::collections::HashMap;

use serde_json::Value as Json;

/// One feature's entry in fg.json.
#[derive(Debug, Clone, Default)]
pub(crate) struct FgFeature {
    pub(crate) feature_type: String,
    pub(crate) expression: Option<String>,
    pub(crate) map: Option<String>,
    pub(crate) key: Option<String>,
    /// For a sequence group's feature: its group.
    pub(crate) sequence: Option<SeqGroup>,
}

/// A sequence group of fg.json, as one of its features sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqGroup {
    pub(crate) name: String,
    /// The feature's own name inside the group.
    pub(crate) member: String,
    pub(crate) length: u32,
    pub(crate) delim: String,
    pub(crate) pk: Option<String>,
}

/// The features of an fg.json by name (a sequence group's as
/// `<sequence_name>__<feature_name>`, EasyRec's name for them).
#[derive(Debug, Default)]
pub struct FgJson {
    features: HashMap<String, FgFeature>,
}

fn string(v: &Json, name: &str) -> Option<String> {
    v.get(name).and_then(Json::as_str).map(str::to_string)
}

fn entry(v: &Json) -> FgFeature {
    FgFeature {
        feature_type: string(v, "feature_type").unwrap_or_default(),
        expression: string(v, "expression"),
        map: string(v, "map"),
        key: string(v, "key"),
        sequence: None,
    }
}

impl FgJson {
    /// Parses fg.json's text; the error says where it is malformed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let root: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Some(list) = root.get("features").and_then(Json::as_array) else {
            return Err("it has no `features` list".to_string());
        };
        let mut features = HashMap::new();
        for (i, f) in list.iter().enumerate() {
            if let Some(seq) = string(f, "sequence_name") {
                let length = f
                    .get("sequence_length")
                    .and_then(Json::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0);
                let delim = string(f, "sequence_delim").unwrap_or_else(|| ";".to_string());
                for sub in f
                    .get("features")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = string(sub, "feature_name") {
                        let mut e = entry(sub);
                        e.sequence = Some(SeqGroup {
                            name: seq.clone(),
                            member: name.clone(),
                            length,
                            delim: delim.clone(),
                            pk: string(f, "sequence_pk"),
                        });
                        features.insert(format!("{seq}__{name}"), e);
                    }
                }
            } else if let Some(name) = string(f, "feature_name") {
                features.insert(name, entry(f));
            } else {
                return Err(format!(
                    "features[{i}] has neither `feature_name` nor `sequence_name`"
                ));
            }
        }
        Ok(FgJson { features })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&FgFeature> {
        self.features.get(name)
    }
}
