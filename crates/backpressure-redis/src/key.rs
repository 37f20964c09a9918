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
        // `{` and `}` would end the hash tag early; `%` is escaped too, so
        // that the escaping is one-to-one (`a}b` and `a%7Db` are two keys).
        for c in self.chars() {
            match c {
                '{' => out.push_str("%7B"),
                '}' => out.push_str("%7D"),
                '%' => out.push_str("%25"),
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

    fn name(key: &str) -> String {
        let mut out = String::new();
        key.write_key(&mut out);
        out
    }

    #[test]
    fn braces_cannot_break_the_hash_tag() {
        assert_eq!(name("a}b{c"), "a%7Db%7Bc");
    }

    /// The first version escaped the braces but not `%`, so `a}b` and
    /// `a%7Db` shared one bucket.
    #[test]
    fn distinct_keys_never_share_a_redis_key() {
        assert_ne!(name("a}b"), name("a%7Db"));
        assert_ne!(name("{"), name("%7B"));
        assert_eq!(name("100%"), "100%25");
    }

    /// The escaping's inverse: a key name decodes back to its key, so two
    /// keys with one name would be one key.
    fn decode(name: &str) -> String {
        let mut out = String::new();
        let mut rest = name;
        while let Some(c) = rest.chars().next() {
            let (decoded, len) = match rest.get(..3) {
                Some("%7B") => ('{', 3),
                Some("%7D") => ('}', 3),
                Some("%25") => ('%', 3),
                _ => (c, c.len_utf8()),
            };
            out.push(decoded);
            rest = &rest[len..];
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn escaping_is_injective(key in "[a-z{}%7BD]{0,12}") {
            proptest::prop_assert_eq!(decode(&name(&key)), key.clone());
            let braces = ['{', '}'];
            proptest::prop_assert!(!name(&key).contains(braces), "a brace in {}", name(&key));
        }
    }
}
