//! Fuzz target: one control-socket request line against a real (unmounted) overlay.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use statelite_fs::layers::{LayerPaths, LayerStack};
use statelite_fs::overlay::{Overlay, OverlayOptions};
use statelite_fs::rules::{RuleSet, rows_from};
use statelite_mountd::control::{Control, answer_line};

fn control() -> &'static Control {
    static CTL: OnceLock<(std::path::PathBuf, Control)> = OnceLock::new();
    &CTL.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("statelite-fuzz-control-{}", std::process::id()));
        for sub in ["img/etc", "img/tmp", "vol", "state"] {
            std::fs::create_dir_all(d.join(sub)).expect("fuzz layers");
        }
        std::fs::write(d.join("img/etc/passwd"), "root\n").expect("fuzz image");
        let rows =
            rows_from(&[("ALL", "/tmp/", "tmpfs"), ("ALL", "/etc/motd", "ro")]).expect("rows");
        let layers = LayerStack::open(LayerPaths {
            image: d.join("img"),
            trees: vec![],
            volatile: d.join("vol"),
            state: Some(d.join("state")),
            localdisk: None,
        })
        .expect("layers");
        let ov = Overlay::new(
            RuleSet::for_image(&rows, "x"),
            layers,
            OverlayOptions::default(),
        )
        .expect("overlay");
        (
            d,
            Control {
                overlay: ov,
                reload: None,
                log: None,
            },
        )
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let v = answer_line(control(), &line);
    assert!(v.is_object());
});
