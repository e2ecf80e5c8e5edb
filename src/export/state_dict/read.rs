//! `plec import`: fills a compiled plan from a safetensors `state_dict`
//! (one `plec export --format safetensors` wrote, or one saved from
//! TorchEasyRec's model of the same config) by TorchEasyRec name and
//! shape. Like a warm start (`plan::warm`), it copies what matches and
//! reports every name that is not in both with one shape.

use std::collections::HashSet;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{derived, slots, NamingError, Place};
use crate::plan::compare::{Entry, Kind};
use crate::plan::warm::WarmStart;
use crate::proto::plan::Plan;

/// Why a file could not be read into a plan.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Naming(#[from] NamingError),
    #[error("{path} is not a safetensors file: {reason}")]
    Invalid {
        path: String,
        reason: safetensors::SafeTensorError,
    },
    #[error("tensor \"{tensor}\" of {path} is {dtype:?}, expected F32")]
    Dtype {
        path: String,
        tensor: String,
        dtype: Dtype,
    },
    #[error("parameter \"{0}\" of the compiled plan has no values to fill")]
    Unmaterialized(String),
}

/// Copies every tensor of the safetensors `bytes` (read from `path`) whose
/// name and shape match one of `plan`'s into it.
pub fn import(plan: &mut Plan, bytes: &[u8], path: &Path) -> Result<WarmStart, ReadError> {
    let file = SafeTensors::deserialize(bytes).map_err(|reason| ReadError::Invalid {
        path: path.display().to_string(),
        reason,
    })?;
    let slots = slots(plan)?;
    let derived: HashSet<String> = derived(plan, &slots).into_iter().map(|d| d.name).collect();
    let mut mismatched = Vec::new();
    let mut copied = 0;
    let mut known: HashSet<&str> = HashSet::new();
    for s in &slots {
        known.insert(&s.name);
        let kind = match s.place {
            Place::Table(_) => Kind::Table,
            Place::Param { .. } | Place::Packed(_) => Kind::Param,
        };
        let view = file.tensor(&s.name).ok();
        let shape = view
            .as_ref()
            .map(|v| v.shape().iter().map(|&d| d as u64).collect::<Vec<_>>());
        let Some(view) = view.filter(|_| shape.as_ref() == Some(&s.shape)) else {
            mismatched.push(Entry {
                kind,
                name: s.name.clone(),
                a: Some(s.shape.clone()),
                b: shape,
            });
            continue;
        };
        if view.dtype() != Dtype::F32 {
            return Err(ReadError::Dtype {
                path: path.display().to_string(),
                tensor: s.name.clone(),
                dtype: view.dtype(),
            });
        }
        let data = view.data();
        match &s.place {
            Place::Table(i) => plan.tables[*i].data = data.to_vec(),
            Place::Packed(indices) => {
                let mut rest = data;
                for &index in indices {
                    let p = &mut plan.params[index];
                    let n = p.data.len();
                    if n == 0 || n > rest.len() {
                        return Err(ReadError::Unmaterialized(p.name.clone()));
                    }
                    let (part, tail) = rest.split_at(n);
                    p.data.copy_from_slice(part);
                    rest = tail;
                }
            }
            Place::Param { index, offset } => {
                let p = &mut plan.params[*index];
                let range = offset * 4..offset * 4 + data.len();
                match p.data.get_mut(range) {
                    Some(dst) => dst.copy_from_slice(data),
                    None => return Err(ReadError::Unmaterialized(p.name.clone())),
                }
            }
        }
        copied += 1;
    }
    for (name, view) in file.iter() {
        if known.contains(name) || derived.contains(name) {
            continue;
        }
        mismatched.push(Entry {
            kind: Kind::Param,
            name: name.to_string(),
            a: None,
            b: Some(view.shape().iter().map(|&d| d as u64).collect()),
        });
    }
    mismatched.sort_by(|x, y| (x.kind, &x.name).cmp(&(y.kind, &y.name)));
    Ok(WarmStart { copied, mismatched })
}
