//! `--real`: placeholder, replaced below.
use std::time::Duration;

use backpressure_lab::stacks::Stack;

pub(crate) fn main(_duration: Duration, _loads: &[f64], _stacks: &[Stack]) {
    eprintln!("--real is not built yet");
    std::process::exit(2);
}
