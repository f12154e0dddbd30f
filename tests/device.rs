//! Every device path of SPEC.md through the real entry points, on the simulated kernel.

#[path = "sim/mod.rs"]
mod sim;

use sim::*;

#[test]
fn smoke() {
    let k = Kernel::boot_compiled(3);
    let p = k.spawn(false);
    let bytes = k.snapshot(p).unwrap();
    check::assert_snapshot(&k.files(), &bytes);
    k.shutdown();
}
