"""What the built module exports to its host.

The filter's allocator (src/alloc.rs) keeps freed blocks on a list by the
size Rust frees them with, so every buffer the host writes into must come
from Rust's allocator, through the SDK's `proxy_on_memory_allocate`, and be
freed with the size the host reports. proxy-wasm's host would allocate with
an exported `malloc` in its place: a dlmalloc chunk that the SDK would
later free into a class larger than the chunk. No test could see that
happen before it corrupts memory, so the exports are checked instead.
"""

from pathlib import Path


def _leb128(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def module_exports(path: Path) -> set[str]:
    data = path.read_bytes()
    assert data[:8] == b"\0asm\x01\0\0\0", "not a Wasm module, version 1"
    at, names = 8, set()
    while at < len(data):
        section, at = data[at], at + 1
        size, at = _leb128(data, at)
        end = at + size
        if section == 7:  # the export section
            count, p = _leb128(data, at)
            for _ in range(count):
                n, p = _leb128(data, p)
                names.add(data[p : p + n].decode())
                p += n + 1  # the name, then the export's kind
                _, p = _leb128(data, p)  # its index
        at = end
    return names


def test_the_host_allocates_through_the_sdk_and_never_through_libc(wasm: Path) -> None:
    exports = module_exports(wasm)
    assert "proxy_on_memory_allocate" in exports
    assert "proxy_on_request_body" in exports  # the parser reads the real section
    assert not exports & {"malloc", "free", "calloc", "realloc"}


def test_the_module_exports_only_the_abi_and_its_own_byte_comparison(wasm: Path) -> None:
    # `memcmp` is the module's own (src/memcmp.rs): Rust exports every
    # `#[no_mangle]` function of a cdylib, and defining it is how the
    # module's comparisons stop using wasi-libc's byte-a-step one. The host
    # never calls it; nothing else beyond the proxy-wasm ABI may be exported.
    extra = {n for n in module_exports(wasm) if not n.startswith("proxy_")}
    assert extra == {"memory", "_initialize", "memcmp"}, extra
