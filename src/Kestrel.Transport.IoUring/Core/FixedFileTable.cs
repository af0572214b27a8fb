using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>
/// The ring's table of registered ("fixed") files, registered sparse (all empty) once. A socket installed in a slot
/// can be used by SQEs with IOSQE_FIXED_FILE, which spares the kernel a file-table look-up and a reference count per
/// operation. Slots are handed out by this class; the kernel's own allocator (IORING_FILE_INDEX_ALLOC) is not used,
/// so a slot's owner is always known here.
/// </summary>
internal sealed unsafe class FixedFileTable : IDisposable
{
    private readonly Ring _ring;
    private readonly Stack<int> _free;
    private bool _registered;

    public FixedFileTable(Ring ring, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        _ring = ring;
        Size = size;
        IoUringRsrcRegister reg = new() { Count = (uint)size, Flags = IoUringValues.RsrcRegisterSparse };
        int r = ring.Register(RegisterOpcode.RegisterFiles2, &reg, (uint)sizeof(IoUringRsrcRegister));
        if (r < 0)
        {
            throw new IoUringException($"IORING_REGISTER_FILES2 (sparse, {size} slots)", r);
        }
        _registered = true;
        _free = new Stack<int>(size);
        for (int i = size - 1; i >= 0; i--)
        {
            _free.Push(i);
        }
    }

    public int Size { get; }

    public int InUse => Size - _free.Count;

    /// <summary>Installs <paramref name="fd"/> in a free slot. Returns the slot, or -ENFILE when the table is full, or -errno.</summary>
    public int Install(int fd)
    {
        if (!_free.TryPop(out int slot))
        {
            return -Errno.ENFILE;
        }
        int r = Update(slot, fd);
        if (r < 0)
        {
            _free.Push(slot);
            return r;
        }
        return slot;
    }

    /// <summary>Empties <paramref name="slot"/>. The kernel drops its file reference once no request uses it any more.</summary>
    public int Remove(int slot)
    {
        int r = Update(slot, -1);
        _free.Push(slot);
        return r;
    }

    /// <summary>Returns a slot that a CLOSE_DIRECT emptied to the free list; call only once its completion arrived.</summary>
    public void Release(int slot) => _free.Push(slot);

    private int Update(int slot, int fd)
    {
        int value = fd;
        IoUringRsrcUpdate update = new() { Offset = (uint)slot, Data = (ulong)&value };
        int r = _ring.Register(RegisterOpcode.RegisterFilesUpdate, &update, 1);
        return r < 0 ? r : 0;
    }

    public void Dispose()
    {
        if (_registered)
        {
            _registered = false;
            _ring.Register(RegisterOpcode.UnregisterFiles, null, 0);
        }
    }
}
