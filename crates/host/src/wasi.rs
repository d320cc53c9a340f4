//! The WASI imports a plugin gets: `wasmtime-wasi`'s, with an empty context, except that the
//! `wasi:io` functions that wait never wait.
//!
//! Components that `rustc` builds for `wasm32-wasip2` import `wasi:io/streams` and
//! `wasi:io/poll` whether or not they print (the standard library's stdio needs them), and
//! `wasmtime-wasi`'s synchronous versions of the waiting functions (`blocking-write-and-flush`,
//! `poll`, dropping a stream...) run their future on tokio with `Handle::block_on`, which panics
//! on a thread that drives async tasks.
//! Calling every plugin outside the async context (`block_in_place`) to be safe cost about 10 us
//! a call, measured, against about 1 us for the call itself.
//!
//! A plugin's streams never need to wait: it has no stdin, and its stdout and stderr discard what
//! is written to them. So these functions are linked over `wasmtime-wasi`'s with versions that
//! poll the same future once: it is always ready for those streams, and the call returns at once.
//! A future that is not ready (a plugin that sleeps, or waits on a clock) is a trap naming the
//! cause: a plugin's call must not wait, it has a time budget and holds a thread.
//! Every other function, and every non-waiting one, is `wasmtime-wasi`'s own.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::{
    WasiView,
    p2::{
        DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult,
        bindings::{
            io::{poll as async_poll, streams as async_streams},
            sync::io::{poll, streams},
        },
    },
};

/// Adds all of WASI with an empty context (no files, network, environment or stdio), then the
/// non-waiting `wasi:io` functions over `wasmtime-wasi`'s.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    poll::add_to_linker::<T, NonBlockingIo>(linker, |t| NonBlocking(t.ctx().table))?;
    streams::add_to_linker::<T, NonBlockingIo>(linker, |t| NonBlocking(t.ctx().table))?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The `wasi:io` host, over the store's resource table.
pub(crate) struct NonBlocking<'a>(&'a mut ResourceTable);

/// [`HasData`] for [`NonBlocking`].
struct NonBlockingIo;

impl HasData for NonBlockingIo {
    type Data<'a> = NonBlocking<'a>;
}

/// Polls `future` once: its output, or a trap when it would wait.
fn at_once<F: Future>(what: &str, future: F) -> wasmtime::Result<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Err(wasmtime::format_err!(
            "the plugin would wait in wasi:io {what}: a plugin's call must not wait (it has no \
             stdin, its stdout and stderr discard, and it may not sleep)"
        )),
    }
}

/// [`at_once`] for a stream operation.
fn stream_at_once<T>(what: &str, future: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    at_once(what, future).map_err(StreamError::Trap)?
}

impl poll::Host for NonBlocking<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once("poll", async_poll::Host::poll(self.0, pollables))?
    }
}

impl poll::HostPollable for NonBlocking<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        at_once(
            "pollable.ready",
            async_poll::HostPollable::ready(self.0, pollable),
        )?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        at_once(
            "pollable.block",
            async_poll::HostPollable::block(self.0, pollable),
        )?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for NonBlocking<'_> {
    fn convert_stream_error(
        &mut self,
        error: StreamError,
    ) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, error)
    }
}

impl streams::HostOutputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        at_once(
            "output-stream.drop",
            async_streams::HostOutputStream::drop(self.0, stream),
        )?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_at_once(
            "blocking-write-and-flush",
            async_streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes),
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_at_once(
            "blocking-write-zeroes-and-flush",
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        stream_at_once(
            "blocking-flush",
            async_streams::HostOutputStream::blocking_flush(
                self.0,
                Resource::new_borrow(stream.rep()),
            ),
        )
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_at_once(
            "blocking-splice",
            async_streams::HostOutputStream::blocking_splice(self.0, dst, src, len),
        )
    }
}

impl streams::HostInputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        at_once(
            "input-stream.drop",
            async_streams::HostInputStream::drop(self.0, stream),
        )?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        stream_at_once(
            "blocking-read",
            async_streams::HostInputStream::blocking_read(self.0, stream, len),
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        stream_at_once(
            "blocking-skip",
            async_streams::HostInputStream::blocking_skip(self.0, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(self.0, stream)
    }
}
