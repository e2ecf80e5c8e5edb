//! Parquet to model inputs: reading record batches, encoding feature columns
//! as the plan's feature specs say, and synthetic data generation.

pub mod batch;
