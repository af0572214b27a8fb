using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>
/// A region of native memory registered with the ring as fixed buffer 0 (IORING_REGISTER_BUFFERS), handed out in
/// equal chunks. The kernel pins its pages once, at registration, so a SEND_ZC with IORING_RECVSEND_FIXED_BUF from a
/// chunk costs no per-send page pinning and no RLIMIT_MEMLOCK charge while in flight. Owner-thread only.
/// </summary>
internal sealed unsafe class RegisteredBufferArena : IDisposable
{
    private const int PageSize = 4096;

    private readonly Ring _ring;
    private readonly byte* _memory;
    private readonly Stack<int> _free;
    private bool _registered;

    public RegisteredBufferArena(Ring ring, int chunkCount, int chunkSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkCount);
        if (chunkSize <= 0 || chunkSize % PageSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "Chunks are whole pages.");
        }
        _ring = ring;
        ChunkCount = chunkCount;
        ChunkSize = chunkSize;
        nuint size = (nuint)chunkCount * (nuint)chunkSize;
        _memory = (byte*)NativeMemory.AlignedAlloc(size, PageSize);

        IoVec iov = new() { Base = _memory, Length = size };
        int r = ring.Register(RegisterOpcode.RegisterBuffers, &iov, 1);
        if (r < 0)
        {
            NativeMemory.AlignedFree(_memory);
            throw new IoUringException("IORING_REGISTER_BUFFERS", r);
        }
        _registered = true;
        _free = new Stack<int>(chunkCount);
        for (int i = chunkCount - 1; i >= 0; i--)
        {
            _free.Push(i);
        }
    }

    /// <summary>The fixed-buffer index of the whole region.</summary>
    public const ushort BufferIndex = 0;

    public int ChunkCount { get; }
    public int ChunkSize { get; }
    public int FreeChunks => _free.Count;

    public bool TryRent(out int chunk, out byte* pointer)
    {
        if (_free.TryPop(out chunk))
        {
            pointer = _memory + (nuint)chunk * (nuint)ChunkSize;
            return true;
        }
        pointer = null;
        return false;
    }

    public void Return(int chunk) => _free.Push(chunk);

    public void Dispose()
    {
        if (!_registered)
        {
            return;
        }
        _registered = false;
        _ring.Register(RegisterOpcode.UnregisterBuffers, null, 0);
        // The kernel keeps its own references to the pages of any send still in flight; freeing ours is safe.
        NativeMemory.AlignedFree(_memory);
    }
}
