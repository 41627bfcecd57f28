//! The public tool contract: every tool's name, description, input and output schema and
//! annotations are snapshotted (tests/snapshots/tools/), so none of them changes by accident.
//! After an intended change: `INSTA_UPDATE=always cargo test --test tool_schemas` and review the diff.

use vault_mcp::mcp::{ToolSet, packs};

fn snapshot_all(read_only: bool, suffix: &str) {
    let loaded = packs::load(None, &[], read_only);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let set = ToolSet::with_packs(read_only, &loaded);
    let tools = set.list();
    assert!(tools.len() > 10, "built-in and pack tools are listed");
    insta::with_settings!({ snapshot_path => "snapshots/tools", prepend_module_to_snapshot => false }, {
        for t in &tools {
            let v = serde_json::to_value(t).expect("tool serializes");
            insta::assert_json_snapshot!(format!("{}{suffix}", t.name), v);
        }
        let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
        insta::assert_json_snapshot!(format!("_tool_list{suffix}"), names);
    });
}

#[test]
fn tool_contract_is_unchanged() {
    snapshot_all(false, "");
}

#[test]
fn read_only_tool_contract_is_unchanged() {
    snapshot_all(true, "@read_only");
}
