//! Continuing a pass from any point between two of its batches yields
//! exactly the batches the uninterrupted pass yielded after it.

use super::reader::{good_file, test_plan};
use crate::data::batch::Batch;
use crate::data::error::DataError;
use crate::data::reader::{DataSource, ReadOptions};
use crate::data::seek::SeekPoint;

/// Every batch of a pass with the point after it.
fn pass(src: &DataSource, opts: &ReadOptions, from: Option<&SeekPoint>) -> Vec<(Batch, SeekPoint)> {
    let mut it = match from {
        Some(at) => src.batches_from(opts, at),
        None => src.batches(opts),
    };
    let mut out = Vec::new();
    while let Some(b) = it.next() {
        let b = b.unwrap();
        out.push((b, it.position().unwrap().clone()));
    }
    out
}

#[test]
fn every_point_of_a_pass_continues_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Three files of 10 rows in row groups of 4 (4, 4, 2).
    good_file(dir.path(), "a.parquet", 0);
    good_file(dir.path(), "b.parquet", 10);
    good_file(dir.path(), "c.parquet", 20);
    let src = DataSource::open(&test_plan(), &[dir.path().to_str().unwrap()]).unwrap();
    let mut checked = 0;
    for shuffle in [false, true] {
        for drop_remainder in [false, true] {
            for batch in [1, 3, 4, 7, 11] {
                for buffer in [1, 2, 8] {
                    let mut p = test_plan();
                    p.data.as_mut().unwrap().shuffle = shuffle;
                    p.data.as_mut().unwrap().drop_remainder = drop_remainder;
                    let mut opts = ReadOptions::train(&p, batch, 9, 2);
                    opts.shuffle_buffer_batches = buffer;
                    let full = pass(&src, &opts, None);
                    assert!(!full.is_empty());
                    for k in 0..full.len() {
                        let rest = pass(&src, &opts, Some(&full[k].1));
                        let want: Vec<&Batch> = full[k + 1..].iter().map(|(b, _)| b).collect();
                        let got: Vec<&Batch> = rest.iter().map(|(b, _)| b).collect();
                        assert_eq!(
                            got, want,
                            "shuffle {shuffle}, drop {drop_remainder}, batch {batch}, \
                             buffer {buffer}, after batch {k}"
                        );
                        // And the points of the continued pass are the same.
                        let points: Vec<&SeekPoint> = rest.iter().map(|(_, p)| p).collect();
                        let want: Vec<&SeekPoint> = full[k + 1..].iter().map(|(_, p)| p).collect();
                        assert_eq!(points, want);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 500, "{checked}");
}

#[test]
fn a_point_of_other_data_or_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    good_file(dir.path(), "a.parquet", 0);
    good_file(dir.path(), "b.parquet", 10);
    let mut p = test_plan();
    p.data.as_mut().unwrap().shuffle = true;
    let both = DataSource::open(&p, &[dir.path().to_str().unwrap()]).unwrap();
    let opts = ReadOptions::train(&p, 3, 1, 0);
    let full = pass(&both, &opts, None);
    let at = full[2].1.clone();
    assert!(
        !at.pending.is_empty() || at.skip > 0 || at.row > 0,
        "{at:?}"
    );
    let refused = |src: &DataSource, opts: &ReadOptions| {
        let first = src.batches_from(opts, &at).next();
        assert!(
            matches!(first, Some(Err(DataError::Reseek { .. }))),
            "{first:?}"
        );
    };
    let one = DataSource::open(&p, &[dir.path().join("a.parquet").to_str().unwrap()]).unwrap();
    refused(&one, &opts);
    refused(&both, &ReadOptions::train(&p, 4, 1, 0));
}
