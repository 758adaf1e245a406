//! Every scenario in `scenarios/kvp/` runs through the simulated world; its trace is
//! compared with its snapshot in `snapshots/` (CI runs with INSTA_UPDATE=no, so an
//! unreviewed change fails), and every invariant must hold.

use hvguest_sim::scenario;

fn run_dir(dir: &str) {
    let full = format!("{}/../scenarios/{dir}", env!("CARGO_MANIFEST_DIR"));
    let count = std::fs::read_dir(&full).map(|d| d.count()).unwrap_or(0);
    assert!(count >= 1, "no scenarios in {full}");
    insta::glob!("../../scenarios", &format!("{dir}/*.scn"), |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let sc = scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (result, trace) = scenario::run(sc);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../../snapshots");
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_snapshot_suffix(format!("{dir}__{name}"));
        // A broken invariant says more than a changed trace: check it first.
        if let Err(f) = result {
            panic!(
                "{}: invariant violated: {}\n{}",
                path.display(),
                f.violation,
                f.tail.join("\n")
            );
        }
        settings.bind(|| insta::assert_snapshot!("scenario", trace));
    });
}

#[test]
fn kvp_scenarios() {
    run_dir("kvp");
}

#[test]
fn vss_scenarios() {
    run_dir("vss");
}
