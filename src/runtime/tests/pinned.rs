//! Pinned results of the example configs: the compiled plan's bytes (by
//! SHA-256) and the losses and metrics of a short training run. Refactors
//! of the compiler and the runtime must leave both unchanged.
//!
//! Plan bytes are exact on every machine. Losses and metrics were recorded
//! with plec's AVX2 + FMA GEMM kernel (on an AMD EPYC Zen 3): where the
//! engine runs that kernel they must agree to the last bit. Other kernels
//! (AVX-512, AMX, the `gemm` crate) sum in another order, so there losses
//! are compared to 1e-4 relative (four Adam steps keep f32 reordering near
//! 1e-6) and AUCs to 5e-3 absolute: after four steps many predictions are
//! near ties, whose order reordering flips (the `gemm` crate's exact AUCs
//! differed from these by up to 3e-3). To re-pin after an intended change,
//! run `cargo test --release --lib pinned -- --nocapture` on an AVX2-only
//! CPU (or with `PLEC_ISA=avx2`) and copy the printed lines.

/// The kernel the pins were recorded with.
const PINNED_KERNEL: &str = "plec avx2+fma 6x16";

use candle_core::Device;
use sha2::{Digest, Sha256};

use super::runs::random_batch;
use crate::pipeline::{build, BuildOptions};
use crate::runtime::{train, vec_source, Progress, TrainOptions};

/// (example, plan SHA-256, losses of 4 steps, final eval metrics).
type Pin = (
    &'static str,
    &'static str,
    &'static [f32],
    &'static [(&'static str, f64)],
);

#[rustfmt::skip]
const PINS: &[Pin] = &[
    ("ple_demo", "ac179ba802f05743933bee5fe10116805d62c8c8b427362415c605675ff6c8d0", &[1.3993801, 1.3753095, 1.356774, 1.3448927], &[("loss_ctr", 0.6649550497531891), ("loss_cvr", 0.6482663452625275), ("auc_ctr", 0.5), ("exact_auc_ctr", 0.5249587810563421), ("logloss_ctr", 0.6649550697271295), ("auc_cvr", 0.5), ("exact_auc_cvr", 0.5855882298985526), ("logloss_cvr", 0.6482663620230321)]),
    ("ple_taobao", "0e3f84c1b8e609e97a9f89b6661f4985b1e7ae067e0abad6fcf21a0954cd4d00", &[1.3993807, 1.3900063, 1.381372, 1.3769512], &[("loss_ctr", 0.6940729022026062), ("loss_cvr", 0.6754956841468811), ("auc_ctr", 0.5), ("exact_auc_ctr", 0.47117516629711753), ("logloss_ctr", 0.6940729216589766), ("auc_cvr", 0.5), ("exact_auc_cvr", 0.6045568784282072), ("logloss_cvr", 0.675495724857544)]),
    ("mmoe_taobao", "b15eba3b907a2183643e6b84bed5bfa6dd714b7e8d4178f6903b56d74909fd84", &[1.3988883, 1.3910887, 1.3837754, 1.3794336], &[("loss_ctr", 0.6946302652359009), ("loss_cvr", 0.6766932904720306), ("auc_ctr", 0.4986449864498645), ("exact_auc_ctr", 0.46644683230049083), ("logloss_ctr", 0.6946302684881204), ("auc_cvr", 0.5331859624662912), ("exact_auc_cvr", 0.6087945552273853), ("logloss_cvr", 0.6766932623903112)]),
    ("dbmtl_taobao", "29d15bd52466afb02a59b19510e041a94dedebfd9ae069437b9f5741610d7a16", &[1.393986, 1.3855232, 1.3789849, 1.3761005], &[("loss_ctr", 0.6951388120651245), ("loss_cvr", 0.6732461750507355), ("auc_ctr", 0.5044061629427483), ("exact_auc_ctr", 0.4958117762995812), ("logloss_ctr", 0.695138790520893), ("auc_cvr", 0.49692722569756564), ("exact_auc_cvr", 0.5801764781420263), ("logloss_cvr", 0.6732461581409328)]),
    ("simple_multi_task_taobao", "48d2c776c80f64c3e051409e4039a072954c259693f9cbaf25bc9805e37a7c12", &[1.3981099, 1.3827919, 1.3688798, 1.3625829], &[("loss_ctr", 0.6855810284614563), ("loss_cvr", 0.656964123249054), ("auc_ctr", 0.5108495840203158), ("exact_auc_ctr", 0.5165349555593458), ("logloss_ctr", 0.6855810305460422), ("auc_cvr", 0.6448698427840253), ("exact_auc_cvr", 0.6468419218139458), ("logloss_cvr", 0.6569641071193377)]),
];

fn example(name: &str) -> String {
    let path = format!("{}/examples/{name}.config", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn examples_keep_their_plans_and_losses() {
    let names = [
        "ple_demo",
        "ple_taobao",
        "mmoe_taobao",
        "dbmtl_taobao",
        "simple_multi_task_taobao",
    ];
    let mut mismatches = Vec::new();
    for name in names {
        let plan = build(&example(name), BuildOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .plan;
        let sha = format!("{:x}", Sha256::digest(prost::Message::encode_to_vec(&plan)));
        let batches: Vec<_> = (0..4).map(|i| random_batch(&plan, 256, i)).collect();
        let opts = TrainOptions {
            num_steps: Some(4),
            progress: Progress::Silent,
            ..Default::default()
        };
        let r = train(
            &plan,
            &mut vec_source(batches.clone()),
            Some(&mut vec_source(batches[..2].to_vec())),
            &opts,
            &Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let eval = r.eval.unwrap_or_default();
        println!("    (\"{name}\", \"{sha}\", &{:?}, &{:?}),", r.losses, eval);
        let Some((_, want_sha, want_losses, want_eval)) = PINS.iter().find(|p| p.0 == name) else {
            mismatches.push(format!("{name}: not pinned"));
            continue;
        };
        if sha != *want_sha {
            mismatches.push(format!("{name}: plan bytes changed ({sha})"));
        }
        let exact = crate::runtime::exec::native::isa::chosen().f32_kernel_name() == PINNED_KERNEL;
        let close = |a: f64, b: f64| match exact {
            true => a.to_bits() == b.to_bits(),
            false => (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1e-3),
        };
        let close_metric = |name: &str, a: f64, b: f64| match exact || !name.contains("auc") {
            true => close(a, b),
            false => (a - b).abs() <= 5e-3,
        };
        let losses_ok = r.losses.len() == want_losses.len()
            && r.losses
                .iter()
                .zip(*want_losses)
                .all(|(&a, &b)| match exact {
                    true => a.to_bits() == b.to_bits(),
                    false => close(a as f64, b as f64),
                });
        if !losses_ok {
            mismatches.push(format!(
                "{name}: losses {:?}, pinned {want_losses:?}",
                r.losses
            ));
        }
        let eval_ok = eval.len() == want_eval.len()
            && eval
                .iter()
                .zip(*want_eval)
                .all(|((n, a), (m, b))| n == m && close_metric(n, *a, *b));
        if !eval_ok {
            mismatches.push(format!("{name}: metrics {eval:?}, pinned {want_eval:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
