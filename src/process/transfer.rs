//! How arguments and results cross into another process: as bytes.

/// A value that can be sent to a child process and back: every [`Pod`](bytemuck::Pod)
/// type (copied as its bytes), and, with the `serde` feature, any `Serialize +
/// DeserializeOwned` type wrapped in `Serde`.
pub trait Transfer: Sized + Send + 'static {
    /// The most bytes one value takes, if bounded: how many fit in a pool's task cell.
    #[doc(hidden)]
    const MAX_LEN: Option<usize>;

    /// Appends this value's bytes to `out`.
    #[doc(hidden)]
    fn encode(&self, out: &mut Vec<u8>);

    /// The value at the start of `bytes` and how many bytes it took, or `None` if the
    /// bytes do not hold one (they come from another process: never trusted).
    #[doc(hidden)]
    fn decode(bytes: &[u8]) -> Option<(Self, usize)>;

    /// Appends the encodings of `items`, one after the other.
    #[doc(hidden)]
    fn encode_all(items: &[Self], out: &mut Vec<u8>) {
        for item in items {
            item.encode(out);
        }
    }

    /// Exactly `count` values that fill `bytes`, or `None`.
    #[doc(hidden)]
    fn decode_all(bytes: &[u8], count: usize) -> Option<Vec<Self>> {
        let mut out = Vec::with_capacity(count);
        let mut at = 0;
        for _ in 0..count {
            let (value, used) = Self::decode(&bytes[at..])?;
            at += used;
            out.push(value);
        }
        (at == bytes.len()).then_some(out)
    }
}

impl<T: bytemuck::Pod + Send> Transfer for T {
    const MAX_LEN: Option<usize> = Some(size_of::<T>());

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(bytemuck::bytes_of(self));
    }

    fn decode(bytes: &[u8]) -> Option<(Self, usize)> {
        let size = size_of::<T>();
        let bytes = bytes.get(..size)?;
        Some((bytemuck::pod_read_unaligned(bytes), size))
    }

    // Plain data travels as one copy of the whole slice.
    fn encode_all(items: &[Self], out: &mut Vec<u8>) {
        out.extend_from_slice(bytemuck::cast_slice(items));
    }

    fn decode_all(bytes: &[u8], count: usize) -> Option<Vec<Self>> {
        if size_of::<T>() == 0 {
            return (bytes.is_empty()).then(|| vec![<T as bytemuck::Zeroable>::zeroed(); count]);
        }
        (bytes.len() == count.checked_mul(size_of::<T>())?)
            .then(|| bytemuck::pod_collect_to_vec(bytes))
    }
}

/// Wraps any `Serialize + DeserializeOwned` value so that it can be a task's argument or
/// result (with the `serde` feature): `String`s, `Vec`s, maps, your own structs.
///
/// # Examples
///
/// ```no_run
/// use shmsync::process::{self, Serde};
///
/// fn shout(Serde(words): Serde<Vec<String>>) -> Serde<String> {
///     Serde(words.join(" ").to_uppercase())
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     process::init();
///     let p = shmsync::Process::spawn(shout, Serde(vec!["hi".to_string(), "there".into()]))?;
///     assert_eq!(p.join()?.0, "HI THERE");
///     Ok(())
/// }
/// ```
#[cfg(feature = "serde")]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serde<T>(pub T);

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Transfer for Serde<T> {
    const MAX_LEN: Option<usize> = None;

    fn encode(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        // Serialising to a Vec fails only for types that refuse to serialise (a
        // serde impl returning an error); such a value travels as nothing and the
        // receiver's decode reports it.
        let len = match postcard::to_extend(&self.0, std::mem::take(out)) {
            Ok(v) => {
                *out = v;
                out.len() - at - 4
            }
            Err(_) => 0,
        };
        out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<(Self, usize)> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let body = bytes.get(4..4 + len)?;
        let value = postcard::from_bytes(body).ok()?;
        Some((Serde(value), 4 + len))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pod_values_round_trip_and_short_bytes_are_refused() {
        let mut out = Vec::new();
        7u64.encode(&mut out);
        [1u16, 2].encode(&mut out);
        assert_eq!(u64::decode(&out), Some((7, 8)));
        assert_eq!(<[u16; 2]>::decode(&out[8..]), Some(([1, 2], 4)));
        assert_eq!(u64::decode(&out[..7]), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_values_round_trip_and_garbage_is_refused() {
        let mut out = Vec::new();
        Serde((String::from("job"), vec![1u32, 2, 3])).encode(&mut out);
        let (Serde((s, v)), used) = Serde::<(String, Vec<u32>)>::decode(&out).unwrap();
        assert_eq!((s.as_str(), v, used), ("job", vec![1, 2, 3], out.len()));
        assert!(Serde::<String>::decode(&[9, 0, 0, 0, 1]).is_none());
    }
}
