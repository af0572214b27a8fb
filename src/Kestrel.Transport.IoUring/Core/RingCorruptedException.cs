namespace Kestrel.Transport.IoUring.Core;

/// <summary>The ring's shared memory holds something the kernel never writes: nothing in it can be trusted any more.</summary>
internal sealed class RingCorruptedException(string message) : Exception($"The io_uring's shared memory is corrupted: {message}.");
