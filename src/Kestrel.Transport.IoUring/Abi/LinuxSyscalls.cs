using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Abi;

/// <summary>
/// The libc entry points this transport needs. io_uring's three syscalls have no libc wrapper, so they go through
/// syscall(2); the rest are plain libc functions. Every call returns -errno on failure (never throws) so that callers
/// decide what an error means.
/// </summary>
internal static unsafe partial class LinuxSyscalls
{
    private const string Libc = "libc";

    // syscall(2) is variadic; on x86_64 and aarch64 Linux integer varargs travel in the same registers as fixed ones.
    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    public static int IoUringSetup(uint entries, IoUringParams* p)
        => Result(Syscall(SyscallNumbers.IoUringSetup, entries, (long)p, 0, 0, 0, 0));

    public static int IoUringEnter(int fd, uint toSubmit, uint minComplete, EnterFlags flags, void* arg, nuint argSize)
        => Result(Syscall(SyscallNumbers.IoUringEnter, fd, toSubmit, minComplete, (long)flags, (long)arg, (long)argSize));

    public static int IoUringRegister(int fd, RegisterOpcode opcode, void* arg, uint count)
        => Result(Syscall(SyscallNumbers.IoUringRegister, fd, (long)opcode, (long)arg, count, 0, 0));

    [LibraryImport(Libc, EntryPoint = "mmap", SetLastError = true)]
    private static partial nint MmapRaw(nint addr, nuint length, int prot, int flags, int fd, long offset);

    /// <summary>mmap(2); returns null and sets <paramref name="errno"/> on failure.</summary>
    public static void* Mmap(nuint length, int fd, ulong offset, out int errno)
    {
        const int ProtRead = 1, ProtWrite = 2, MapShared = 1, MapPopulate = 0x8000;
        nint p = MmapRaw(0, length, ProtRead | ProtWrite, MapShared | MapPopulate, fd, (long)offset);
        if (p == -1)
        {
            errno = Marshal.GetLastPInvokeError();
            return null;
        }
        errno = 0;
        return (void*)p;
    }

    [LibraryImport(Libc, EntryPoint = "sched_setscheduler", SetLastError = true)]
    private static partial int SchedSetScheduler(int pid, int policy, int* param);

    /// <summary>sched_setscheduler(2) for the calling thread (pid 0 is the caller), priority 0; returns 0 or -errno.</summary>
    public static int SetCurrentThreadSchedulingPolicy(ThreadSchedulingPolicy policy) => SetThreadSchedulingPolicy(0, policy);

    /// <summary>sched_setscheduler(2) for thread <paramref name="tid"/> of this process, priority 0; returns 0 or -errno.</summary>
    public static int SetThreadSchedulingPolicy(int tid, ThreadSchedulingPolicy policy)
    {
        int priority = 0; // struct sched_param: the only field, 0 for the non-real-time policies
        return SchedSetScheduler(tid, (int)policy, &priority) == 0 ? 0 : -Marshal.GetLastPInvokeError();
    }

    [LibraryImport(Libc, EntryPoint = "gettid")]
    public static partial int GetThreadId();

    [LibraryImport(Libc, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(void* addr, nuint length);

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    private static partial int CloseRaw(int fd);

    public static int Close(int fd) => Result(CloseRaw(fd));

    [LibraryImport(Libc, EntryPoint = "opendir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint OpenDir(string path);

    [LibraryImport(Libc, EntryPoint = "readdir", SetLastError = true)]
    private static partial nint ReadDir(nint dir);

    [LibraryImport(Libc, EntryPoint = "closedir", SetLastError = true)]
    private static partial int CloseDir(nint dir);

    /// <summary>
    /// Entries of a directory other than "." and "..", by readdir(3) alone: no stat per entry (the managed enumeration
    /// stats every symlink, and each entry of /proc/self/fd is one). -1 if the directory cannot be opened.
    /// </summary>
    public static long CountDirectoryEntries(string path)
    {
        nint dir = OpenDir(path);
        if (dir == 0)
        {
            return -1;
        }
        long count = 0;
        while (ReadDir(dir) != 0)
        {
            count++;
        }
        CloseDir(dir);
        return Math.Max(0, count - 2); // "." and ".."
    }

    [LibraryImport(Libc, EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFdRaw(uint initval, int flags);

    /// <summary>eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK).</summary>
    public static int EventFd() => Result(EventFdRaw(0, 0x80000 | 0x800));

    [LibraryImport(Libc, EntryPoint = "write", SetLastError = true)]
    private static partial nint WriteRaw(int fd, void* buffer, nuint count);

    public static int Write(int fd, void* buffer, nuint count) => Result(WriteRaw(fd, buffer, count));

    /// <summary>
    /// send(2)/sendmsg(2) flags (include/linux/socket.h), also the msg_flags of io_uring's sends: MSG_DONTWAIT never
    /// blocks the sending thread; MSG_NOSIGNAL turns SIGPIPE into EPIPE.
    /// </summary>
    public const int MsgDontWait = 0x40, MsgNoSignal = 0x4000;

    [LibraryImport(Libc, EntryPoint = "send", SetLastError = true)]
    private static partial nint SendRaw(int fd, byte* buffer, nuint length, int flags);

    /// <summary>send(2): the bytes the kernel took, or -errno.</summary>
    public static int Send(int fd, byte* buffer, nuint length, int flags) => Result(SendRaw(fd, buffer, length, flags));

    [LibraryImport(Libc, EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SendMsgRaw(int fd, MsgHdr* message, int flags);

    /// <summary>sendmsg(2): the bytes the kernel took, or -errno.</summary>
    public static int SendMsg(int fd, MsgHdr* message, int flags) => Result(SendMsgRaw(fd, message, flags));

    [LibraryImport(Libc, EntryPoint = "connect", SetLastError = true)]
    private static partial int ConnectRaw(int fd, byte* address, uint length);

    /// <summary>connect(2): 0 or -errno.</summary>
    public static int Connect(int fd, byte* address, uint length) => Result(ConnectRaw(fd, address, length));

    /// <summary>shutdown(2)'s how, for IORING_OP_SHUTDOWN.</summary>
    public const int ShutRd = 0, ShutWr = 1, ShutRdWr = 2;

    [LibraryImport(Libc, EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOptRaw(int fd, int level, int name, void* value, uint length);

    public static int SetSockOpt(int fd, int level, int name, void* value, uint length)
        => Result(SetSockOptRaw(fd, level, name, value, length));

    [LibraryImport(Libc, EntryPoint = "getsockopt", SetLastError = true)]
    private static partial int GetSockOptRaw(int fd, int level, int name, void* value, uint* length);

    public static int GetSockOpt(int fd, int level, int name, void* value, uint* length)
        => Result(GetSockOptRaw(fd, level, name, value, length));

    [LibraryImport(Libc, EntryPoint = "getsockname", SetLastError = true)]
    private static partial int GetSockNameRaw(int fd, byte* address, uint* length);

    public static int GetSockName(int fd, byte* address, uint* length) => Result(GetSockNameRaw(fd, address, length));

    [LibraryImport(Libc, EntryPoint = "getpeername", SetLastError = true)]
    private static partial int GetPeerNameRaw(int fd, byte* address, uint* length);

    public static int GetPeerName(int fd, byte* address, uint* length) => Result(GetPeerNameRaw(fd, address, length));

    [LibraryImport(Libc, EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRLimitRaw(int resource, RLimit* limit);

    public const int RLimitNoFile = 7, RLimitMemLock = 8;

    public static int GetRLimit(int resource, out RLimit limit)
    {
        RLimit l;
        int r = Result(GetRLimitRaw(resource, &l));
        limit = l;
        return r;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    private static int Result(long r) => r < 0 ? -Marshal.GetLastPInvokeError() : (int)r;
}
