//! Node keys, root keys and evaluation file names of the example experiments and of one that uses
//! every optional setting, against the values recorded in `tests/golden/keys.json`. A change that
//! alters any key would make every existing cache unusable (and may mean results changed): it must
//! bump `plan::NODE_FORMAT` and re-record on purpose with `ORDO_BLESS=1 cargo test -p ordo-lab --test keys`.

use ordo_lab::evaluation::eval_file;
use ordo_lab::plan::{plan, sha256_hex};
use serde_json::{json, Value};
use std::path::Path;

/// The experiments whose keys are pinned: (name, file, directory its relative paths resolve against).
/// Every key here was also checked against `ordo plan` of the binary before the architecture change.
const SPECS: &[(&str, &str, &str)] = &[
    ("orders", "../../examples/orders.toml", "../../examples"),
    ("quick", "../../examples/quick.toml", "../../examples"),
    ("leaky-tests", "../../examples/leaky-tests.toml", "../../examples"),
    ("spillover", "../../examples/spillover.toml", "../../examples"),
    ("transfer", "../../examples/transfer.toml", "../../examples"),
    ("every_shape", "tests/data/keys-every-shape.toml", "tests/data"),
    ("no_world", "tests/data/keys-no-world.toml", "tests/data"),
];

fn keys_of(file: &str, base_dir: &str) -> Value {
    let text = std::fs::read_to_string(file).unwrap();
    let exp = ordo_lab::spec::parse(&text, file, Path::new(base_dir)).unwrap_or_else(|e| panic!("{e}"));
    let p = plan(&exp);
    json!({
        "experiment_sha256": sha256_hex(json!(exp).to_string().as_bytes()),
        "roots": p.roots.iter().map(|(seed, key)| json!({"seed": seed, "key": key})).collect::<Vec<_>>(),
        "nodes": p.nodes.iter().map(|n| json!({"stage": n.stage, "seed": n.seed, "key": n.key})).collect::<Vec<_>>(),
        "evaluations": match exp.world {
            Some(_) => exp.seeds.iter().map(|&s| json!([eval_file("eval", &exp, s), eval_file("probe-eval", &exp, s)])).collect::<Vec<_>>(),
            None => vec![],
        },
    })
}

#[test]
fn node_keys_are_unchanged() {
    let got: serde_json::Map<String, Value> =
        SPECS.iter().map(|(name, file, dir)| (name.to_string(), keys_of(file, dir))).collect();
    let golden = Path::new("tests/golden/keys.json");
    if std::env::var_os("ORDO_BLESS").is_some() {
        std::fs::write(golden, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: serde_json::Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    for (name, _, _) in SPECS {
        assert_eq!(got[*name], want[*name], "{name}: keys changed (see this file's doc comment)");
    }
}

/// Keys hash `serde_json` maps, whose keys must come out sorted: a dependency that turns on
/// `serde_json/preserve_order` would change every key.
#[test]
fn json_maps_serialise_sorted() {
    assert_eq!(json!({"b": 1, "a": 2}).to_string(), r#"{"a":2,"b":1}"#);
}
