//! Constant-memory rendering from a reader to a writer.

use std::io::{ErrorKind, Read, Seek, Write};

use crate::engine::{Engine, Out};
use crate::error::{Origin, RenderError};
use crate::{Options, Vars};

/// Read size. Large enough that syscalls and memchr set-up vanish in the profile, small enough
/// to stay in L2.
const CHUNK: usize = 256 * 1024;

/// Output is handed to the writer in blocks of about this size.
const FLUSH_AT: usize = 128 * 1024;

/// Renders `input` into `output` in constant memory (two buffers of a few hundred KiB, plus
/// the longest single reference).
///
/// `output` receives data as it is rendered, so when this returns [`RenderError::Missing`]
/// part of the result has already been written. Callers that must not emit half a file should
/// use [`render_buffered`], or render into an `atomic_file::AtomicFile`, when
/// [`Options::can_fail`].
///
/// On a read error, what was rendered before it is still written (as GNU does), then
/// [`RenderError::Read`] is returned.
pub fn render_stream<R: Read, W: Write>(
    mut input: R,
    mut output: W,
    vars: &Vars,
    opts: &Options,
    origin: &Origin,
) -> Result<(), RenderError> {
    let mut engine = Engine::new(vars, opts);
    let mut buf = vec![0u8; CHUNK];
    let mut out = Spill {
        buf: Vec::with_capacity(2 * FLUSH_AT),
        writer: &mut output,
        error: None,
    };
    // buf[..end] holds bytes read and not yet consumed (an unfinished reference at its start).
    let mut end = 0;
    let mut unfinished = false;
    loop {
        if end == buf.len() {
            // One reference fills the whole buffer: only an absurdly long name does that.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match read_some(&mut input, &mut buf[end..]) {
            Ok(n) => n,
            Err(error) => {
                // Best effort: GNU also flushes what it has before exiting on a read error.
                out.pass_on();
                let _ = out.writer.flush();
                return Err(RenderError::Read {
                    origin: origin.clone(),
                    error,
                });
            }
        };
        end += n;
        let eof = n == 0;
        // Rescanning an unfinished reference on every short read would be quadratic in its
        // length; wait until the buffer is full instead.
        if unfinished && !eof && end < buf.len() {
            continue;
        }
        let consumed = engine.feed(&buf[..end], eof, &mut out);
        buf.copy_within(consumed..end, 0);
        end -= consumed;
        unfinished = end > 0;
        if eof {
            out.pass_on();
        }
        if let Some(error) = out.error.take() {
            return Err(RenderError::Write(error));
        }
        if eof {
            break;
        }
    }
    output.flush().map_err(RenderError::Write)?;
    engine.finish(origin)
}

/// The engine's output on its way to the writer, passed on in blocks of about [`FLUSH_AT`]
/// bytes even in the middle of a chunk: a chunk of references to a large value would
/// otherwise pile up its whole expansion (gigabytes) in memory. The first write error stops
/// the writing, and the stream reports it after the chunk.
struct Spill<W: Write> {
    buf: Vec<u8>,
    writer: W,
    error: Option<std::io::Error>,
}

impl<W: Write> Spill<W> {
    fn pass_on(&mut self) {
        if self.error.is_none()
            && let Err(error) = self.writer.write_all(&self.buf)
        {
            self.error = Some(error);
        }
        self.buf.clear();
    }
}

impl<W: Write> Out for Spill<W> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() < FLUSH_AT {
            self.buf.extend_from_slice(bytes);
            return;
        }
        self.pass_on();
        if bytes.len() < FLUSH_AT {
            self.buf.extend_from_slice(bytes);
        } else if self.error.is_none()
            && let Err(error) = self.writer.write_all(bytes)
        {
            self.error = Some(error);
        }
    }
}

/// Like [`render_stream`], but `output` receives nothing unless the whole render succeeds.
///
/// The result waits in an anonymous temporary file under `$TMPDIR` (see
/// [`std::env::temp_dir`]), not in memory, so memory stays as bounded as in
/// [`render_stream`]. The file has no name from the start, so it disappears with the process
/// however that ends.
pub fn render_buffered<R: Read, W: Write>(
    input: R,
    mut output: W,
    vars: &Vars,
    opts: &Options,
    origin: &Origin,
) -> Result<(), RenderError> {
    let buffer_error = |error| RenderError::Buffer {
        dir: std::env::temp_dir(),
        error,
    };
    let mut buffer = tempfile::tempfile().map_err(buffer_error)?;
    match render_stream(input, &mut buffer, vars, opts, origin) {
        Ok(()) => {}
        // Every write so far went to the buffer.
        Err(RenderError::Write(error)) => return Err(buffer_error(error)),
        Err(e) => return Err(e),
    }
    buffer.rewind().map_err(buffer_error)?;
    let mut block = vec![0u8; FLUSH_AT];
    loop {
        let n = read_some(&mut buffer, &mut block).map_err(buffer_error)?;
        if n == 0 {
            break;
        }
        output.write_all(&block[..n]).map_err(RenderError::Write)?;
    }
    output.flush().map_err(RenderError::Write)
}

fn read_some<R: Read>(input: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render;

    /// Hands out at most `step` bytes per read, to put chunk boundaries everywhere.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_output() {
        let mut vars = Vars::new();
        vars.set("A", "1");
        vars.set("LONG_NAME_9", "v");
        let template: &[u8] = b"$A ${A} $$A ${A ${A:-x} $LONG_NAME_9$ ${LONG_NAME_9}} ${";
        for opts in [
            Options::default(),
            Options {
                defaults: true,
                ..Options::default()
            },
        ] {
            let whole = render(template, &vars, &opts).unwrap();
            for step in 1..8 {
                let mut out = Vec::new();
                let input = Trickle {
                    data: template,
                    step,
                };
                render_stream(input, &mut out, &vars, &opts, &Origin::Stdin).unwrap();
                assert_eq!(out, whole, "step {step}, {opts:?}");
            }
        }
    }

    #[test]
    fn positions_survive_chunk_boundaries() {
        let template = b"a\n  $X\nb $Y ${Z}\n";
        let opts = Options {
            strict: true,
            ..Options::default()
        };
        let mut out = Vec::new();
        let input = Trickle {
            data: template,
            step: 1,
        };
        let err = render_stream(input, &mut out, &Vars::new(), &opts, &Origin::Stdin).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<stdin>:2:3: X is not set\n<stdin>:3:3: Y is not set\n<stdin>:3:6: Z is not set"
        );
    }

    #[test]
    fn a_name_longer_than_the_buffer() {
        let name = "N".repeat(3 * CHUNK);
        let mut vars = Vars::new();
        vars.set(name.clone(), "ok");
        let template = format!("<${name}>");
        let mut out = Vec::new();
        let input = Trickle {
            data: template.as_bytes(),
            step: 4096,
        };
        render_stream(input, &mut out, &vars, &Options::default(), &Origin::Stdin).unwrap();
        assert_eq!(out, b"<ok>");
    }

    #[test]
    fn read_errors_keep_what_was_rendered() {
        struct Failing(bool);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    Err(std::io::Error::other("disk on fire"))
                } else {
                    buf[..3].copy_from_slice(b"ab$");
                    Ok(3)
                }
            }
        }
        let mut out = Vec::new();
        let err = render_stream(
            Failing(false),
            &mut out,
            &Vars::new(),
            &Options::default(),
            &Origin::Stdin,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "error while reading <stdin>: disk on fire");
        assert_eq!(out, b"ab");
    }

    fn any_options() -> impl proptest::strategy::Strategy<Value = Options> {
        use proptest::prelude::*;
        (
            any::<[bool; 3]>(),
            proptest::option::of(proptest::collection::vec("[AB_a]{1,2}", 0..3)),
        )
            .prop_map(|([strict, no_empty, defaults], only)| Options {
                strict,
                no_empty,
                defaults,
                only,
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..Default::default()
        })]

        /// No input panics, under any options, wherever the chunk boundaries fall; streaming
        /// and whole-buffer rendering agree; only the opt-in modes can fail.
        #[test]
        fn any_bytes_any_options(
            template in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(&b"${}:-=?+AB_a1\n"[..]),
                    proptest::prelude::any::<u8>(),
                ],
                0..300,
            ),
            opts in any_options(),
            step in 1usize..64,
        ) {
            let mut vars = Vars::new();
            vars.set("A", "x$B{");
            vars.set("_", "");
            let whole = render(&template, &vars, &opts);
            let mut streamed = Vec::new();
            let input = Trickle { data: &template, step };
            let result = render_stream(input, &mut streamed, &vars, &opts, &Origin::Template);
            match (&whole, &result) {
                (Ok(whole), Ok(())) => proptest::prop_assert_eq!(whole, &streamed),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.to_string(), b.to_string()),
                _ => proptest::prop_assert!(false, "{whole:?} vs {result:?}"),
            }
            proptest::prop_assert!(whole.is_ok() || opts.can_fail());
        }
    }
}
