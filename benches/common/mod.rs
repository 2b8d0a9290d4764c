//! What the benches share: the median of a sample.

use std::time::Duration;

/// The median (the mean of the middle two for an even count); sorts `values`.
pub fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    }
}
