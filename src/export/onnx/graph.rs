//! A small ONNX graph builder: nodes, initializers and constants with
//! unique value names, so the lowering reads as one line per ONNX node.

use std::collections::{HashMap, HashSet};

use super::proto::{
    attribute_type, AttributeProto, Dimension, DimensionValue, NodeProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, FLOAT, INT64,
};

/// A dimension of a declared graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dim {
    Fixed(i64),
    /// A symbolic dimension (`batch`, a bag length).
    Named(String),
}

/// A graph input or output: its name, element type and shape.
pub(crate) fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => DimensionValue::DimValue(*v),
                Dim::Named(s) => DimensionValue::DimParam(s.clone()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            }),
            denotation: None,
        }),
        doc_string: None,
    }
}

pub(crate) fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::INT),
        i: Some(v),
        ..Default::default()
    }
}

pub(crate) fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::FLOAT),
        f: Some(v),
        ..Default::default()
    }
}

pub(crate) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// The nodes and initializers of a graph under construction.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    used: HashSet<String>,
    /// Small constants by content, so `axes = [1]` exists once.
    consts: HashMap<(i32, Vec<i64>, Vec<u8>), String>,
}

impl Builder {
    /// Reserves `name` as it is (graph inputs and outputs); false when it
    /// is taken already.
    pub(crate) fn reserve(&mut self, name: &str) -> bool {
        self.used.insert(name.to_string())
    }

    /// A value name not used yet: `hint`, else `hint_2`, `hint_3`...
    pub(crate) fn fresh(&mut self, hint: &str) -> String {
        let hint = if hint.is_empty() { "v" } else { hint };
        if self.used.insert(hint.to_string()) {
            return hint.to_string();
        }
        let mut k = 2usize;
        loop {
            let name = format!("{hint}_{k}");
            if self.used.insert(name.clone()) {
                return name;
            }
            k += 1;
        }
    }

    /// Adds a node of `op` and returns its (single) output's name.
    pub(crate) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        let out = self.fresh(hint);
        self.node_into(op, inputs, attrs, &out);
        out
    }

    /// Adds a node of `op` writing the already reserved value `out`.
    pub(crate) fn node_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out: &str,
    ) {
        let n = self.nodes.len();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: Some(format!("{op}_{n}")),
            op_type: Some(op.to_string()),
            domain: None,
            attribute: attrs,
            doc_string: None,
        });
    }

    /// An f32 initializer from little-endian bytes (`dims`' product values).
    pub(crate) fn init_f32(&mut self, hint: &str, dims: &[i64], le_bytes: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(FLOAT),
            name: Some(name.clone()),
            raw_data: Some(le_bytes),
            ..Default::default()
        });
        name
    }

    /// A small constant (an initializer shared by content).
    fn constant(&mut self, data_type: i32, dims: &[i64], le_bytes: Vec<u8>, hint: &str) -> String {
        let key = (data_type, dims.to_vec(), le_bytes);
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type),
            name: Some(name.clone()),
            raw_data: Some(key.2.clone()),
            ..Default::default()
        });
        self.consts.insert(key, name.clone());
        name
    }

    /// A 1-D int64 constant (axes, starts, shapes).
    pub(crate) fn ints(&mut self, values: &[i64]) -> String {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(INT64, &[values.len() as i64], bytes, "const_i64")
    }

    /// An int64 constant of any shape.
    pub(crate) fn ints_shaped(&mut self, dims: &[i64], values: &[i64]) -> String {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(INT64, dims, bytes, "const_i64")
    }

    /// An int64 scalar constant.
    pub(crate) fn int_scalar(&mut self, v: i64) -> String {
        self.constant(INT64, &[], v.to_le_bytes().to_vec(), "const_i64")
    }

    /// An f32 scalar constant.
    pub(crate) fn float_scalar(&mut self, v: f32) -> String {
        self.constant(FLOAT, &[], v.to_le_bytes().to_vec(), "const_f32")
    }
}
