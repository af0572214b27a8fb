using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Numerics;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>
/// A provided buffer ring (IORING_REGISTER_PBUF_RING) with application-allocated memory: the ring of entries and the
/// buffers themselves are page-aligned native memory that never moves (and no kernel-allocated ring, see
/// CVE-2024-0582). The kernel picks a buffer for each multishot recv completion; the owner copies the bytes out and
/// gives the buffer back with <see cref="Recycle"/>, then publishes all recycled buffers at once with
/// <see cref="Publish"/>.
/// </summary>
internal sealed unsafe class ProvidedBufferRing : IDisposable
{
    private const int PageSize = 4096;

    private readonly Ring _ring;
    private readonly IoUringBuf* _entries;
    private readonly byte* _buffers;
    private readonly uint _mask;
    private ushort _tail; // local tail; the kernel sees it after Publish
    private bool _registered;
    private readonly int[]? _filled; // incremental mode: bytes of each buffer already used by earlier completions

    public ProvidedBufferRing(Ring ring, ushort groupId, int entryCount, int bufferSize, bool incremental = false)
    {
        if (entryCount <= 0 || entryCount > 32768 || !BitOperations.IsPow2(entryCount))
        {
            throw new ArgumentOutOfRangeException(nameof(entryCount), entryCount, "A buffer ring holds a power of two of at most 32768 entries.");
        }
        if (bufferSize <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bufferSize), bufferSize, "A buffer must hold at least one byte.");
        }

        _ring = ring;
        GroupId = groupId;
        EntryCount = entryCount;
        BufferSize = bufferSize;
        _mask = (uint)entryCount - 1;

        nuint ringBytes = (nuint)(entryCount * sizeof(IoUringBuf));
        _entries = (IoUringBuf*)NativeMemory.AlignedAlloc(RoundUpToPage(ringBytes), PageSize);
        NativeMemory.Clear(_entries, ringBytes);
        _buffers = (byte*)NativeMemory.AlignedAlloc(RoundUpToPage((nuint)entryCount * (nuint)bufferSize), PageSize);

        IoUringBufReg reg = default;
        reg.RingAddress = (ulong)_entries;
        reg.RingEntries = (uint)entryCount;
        reg.GroupId = groupId;
        reg.Flags = incremental ? IoUringValues.PbufRingIncremental : (ushort)0;
        int r = ring.Register(RegisterOpcode.RegisterPbufRing, &reg, 1);
        if (r < 0)
        {
            FreeMemory();
            throw new IoUringException("IORING_REGISTER_PBUF_RING", r);
        }
        _registered = true;
        IsIncremental = incremental;

        if (incremental)
        {
            _filled = new int[entryCount];
        }
        for (int i = 0; i < entryCount; i++)
        {
            AddToRing((ushort)i);
        }
        Publish();
    }

    public ushort GroupId { get; }
    public int EntryCount { get; }
    public int BufferSize { get; }
    public bool IsIncremental { get; }

    /// <summary>Buffers the owner has taken out of completions and not yet recycled.</summary>
    public int OutstandingBuffers { get; private set; }

    /// <summary>How many times a recv found this ring empty (a multishot recv ended with ENOBUFS).</summary>
    public long ExhaustedCount { get; private set; }

    public void RecordExhausted() => ExhaustedCount++;

    /// <summary>The memory of buffer <paramref name="bufferId"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> GetBuffer(ushort bufferId, int length)
        => new(_buffers + (nuint)bufferId * (nuint)BufferSize, length);

    /// <summary>A buffer came back from the kernel in a completion; count it as held by the owner.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MarkTaken() => OutstandingBuffers++;

    /// <summary>Queues buffer <paramref name="bufferId"/> to be handed back to the kernel at the next <see cref="Publish"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Recycle(ushort bufferId)
    {
        AddToRing(bufferId);
        OutstandingBuffers--;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AddToRing(ushort bufferId)
    {
        IoUringBuf* e = &_entries[_tail & _mask];
        e->Address = (ulong)(_buffers + (nuint)bufferId * (nuint)BufferSize);
        e->Length = (uint)BufferSize;
        e->BufferId = bufferId;
        _tail++;
    }

    /// <summary>
    /// The bytes a recv completion delivered. In incremental mode (IOU_PBUF_RING_INC) one buffer serves several
    /// completions, each continuing where the previous one ended, so the data starts at that buffer's fill mark.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ReadOnlySpan<byte> Received(ushort bufferId, int length)
    {
        int offset = _filled is null ? 0 : _filled[bufferId];
        return new ReadOnlySpan<byte>(_buffers + (nuint)bufferId * (nuint)BufferSize + (nuint)offset, length);
    }

    /// <summary>
    /// Hands a completion's buffer back once its bytes were copied out. With <paramref name="kernelKeepsBuffer"/>
    /// (IORING_CQE_F_BUF_MORE, incremental mode) the kernel still fills the rest of the buffer: only the fill mark moves.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(ushort bufferId, int length, bool kernelKeepsBuffer)
    {
        if (_filled is not null)
        {
            if (kernelKeepsBuffer)
            {
                _filled[bufferId] += length;
                return;
            }
            _filled[bufferId] = 0;
        }
        AddToRing(bufferId);
    }

    /// <summary>Makes every recycled buffer visible to the kernel (store-release of the ring's u16 tail).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Publish()
    {
        // The tail overlays entries[0].resv at byte 14 of the ring.
        Volatile.Write(ref *(ushort*)((byte*)_entries + 14), _tail);
    }

    private static nuint RoundUpToPage(nuint n) => (n + PageSize - 1) & ~(nuint)(PageSize - 1);

    private void FreeMemory()
    {
        NativeMemory.AlignedFree(_entries);
        NativeMemory.AlignedFree(_buffers);
    }

    public void Dispose()
    {
        if (!_registered)
        {
            return;
        }
        _registered = false;
        IoUringBufReg reg = default;
        reg.GroupId = GroupId;
        _ring.Register(RegisterOpcode.UnregisterPbufRing, &reg, 1);
        FreeMemory();
    }
}
