namespace Kestrel.Transport.IoUring;

/// <summary>
/// Present on every connection the io_uring transport serves (absent when it fell back to Sockets), so that
/// middleware, tests and diagnostics can tell which transport carries a request and which ring serves it.
/// </summary>
public interface IIoUringConnectionFeature
{
    /// <summary>The index of the ring (and thread) serving this connection.</summary>
    int RingId { get; }

    /// <summary>True when the socket sits in the ring's registered-file table.</summary>
    bool UsesRegisteredFile { get; }
}
