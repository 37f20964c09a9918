use std::{
    fmt::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// How a rate-limit key is written into a Redis key name.
///
/// Implemented for `()` (a direct limiter: `global`), strings, integers and
/// addresses; wrap anything else in a type that writes a stable name (the
/// same on every replica).
pub trait RedisKey {
    /// Appends the key's name to `out`.
    fn write_key(&self, out: &mut String);
}

impl RedisKey for () {
    fn write_key(&self, out: &mut String) {
        out.push_str("global");
    }
}

impl RedisKey for str {
    fn write_key(&self, out: &mut String) {
        // `{` and `}` would end the hash tag early.
        for c in self.chars() {
            match c {
                '{' => out.push_str("%7B"),
                '}' => out.push_str("%7D"),
                c => out.push(c),
            }
        }
    }
}

impl RedisKey for String {
    fn write_key(&self, out: &mut String) {
        self.as_str().write_key(out);
    }
}

impl<T: RedisKey + ?Sized> RedisKey for &T {
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

macro_rules! display_keys {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn write_key(&self, out: &mut String) {
                // Writing to a String cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

display_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, IpAddr, Ipv4Addr, Ipv6Addr,
    SocketAddr
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_cannot_break_the_hash_tag() {
        let mut out = String::new();
        "a}b{c".write_key(&mut out);
        assert_eq!(out, "a%7Db%7Bc");
    }
}
