using System.Runtime.CompilerServices;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>
/// Fills zeroed SQEs for the operations a network transport uses, each with its fields and flags where the kernel
/// reads them (liburing's io_uring_prep_* helpers are the reference). <c>fixedFile</c> means <c>fd</c> is
/// a slot of the ring's <see cref="FixedFileTable"/>.
/// </summary>
internal static unsafe class SqePreparation
{
    /// <summary>MSG_NOSIGNAL on every ring send: a send to a closed peer returns EPIPE instead of raising SIGPIPE.</summary>
    private const uint SendFlags = LinuxSyscalls.MsgNoSignal;

    private const uint SockCloexec = 0x80000;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Common(IoUringSqe* sqe, IoUringOpcode op, int fd, bool fixedFile, ulong userData)
    {
        sqe->Opcode = op;
        sqe->Fd = fd;
        sqe->Flags = fixedFile ? SqeFlags.FixedFile : SqeFlags.None;
        sqe->UserData = userData;
    }

    /// <summary>Multishot accept: one CQE per accepted connection (res = new fd) while F_MORE is set.</summary>
    public static void PrepareMultishotAccept(IoUringSqe* sqe, int listenFd, ulong userData, bool directDescriptor = false)
    {
        Common(sqe, IoUringOpcode.Accept, listenFd, false, userData);
        sqe->IoPrio = IoPrioFlags.AcceptMultishot;
        if (directDescriptor)
        {
            // No SOCK_CLOEXEC here: a direct descriptor is not in the fd table, and the kernel's io_accept_prep
            // rejects SOCK_CLOEXEC together with a file_index (-EINVAL on the first CQE).
            sqe->FileIndex = IoUringValues.FileIndexAlloc;
        }
        else
        {
            sqe->OpFlags = SockCloexec;
        }
    }

    /// <summary>A single accept: one connection, one CQE. Used where the multishot form could overshoot a descriptor budget.</summary>
    public static void PrepareAccept(IoUringSqe* sqe, int listenFd, ulong userData)
    {
        Common(sqe, IoUringOpcode.Accept, listenFd, false, userData);
        sqe->OpFlags = SockCloexec;
    }

    /// <summary>Multishot recv into buffers picked from provided buffer group <paramref name="bufferGroup"/>.</summary>
    public static void PrepareMultishotReceive(IoUringSqe* sqe, int fd, bool fixedFile, ushort bufferGroup, ulong userData, bool bundle = false)
    {
        Common(sqe, IoUringOpcode.Recv, fd, fixedFile, userData);
        sqe->Flags |= SqeFlags.BufferSelect;
        sqe->IoPrio = (ushort)(IoPrioFlags.RecvMultishot | (bundle ? IoPrioFlags.RecvSendBundle : 0));
        sqe->BufferIndexOrGroup = bufferGroup;
        // addr and len stay 0: the kernel takes the buffer (multishot wants len 0 before ~6.17).
    }

    /// <summary>A single recv into a caller-owned buffer.</summary>
    public static void PrepareReceive(IoUringSqe* sqe, int fd, bool fixedFile, byte* buffer, uint length, ulong userData)
    {
        Common(sqe, IoUringOpcode.Recv, fd, fixedFile, userData);
        sqe->Address = (ulong)buffer;
        sqe->Length = length;
    }

    public static void PrepareSend(IoUringSqe* sqe, int fd, bool fixedFile, byte* buffer, uint length, ulong userData)
    {
        Common(sqe, IoUringOpcode.Send, fd, fixedFile, userData);
        sqe->Address = (ulong)buffer;
        sqe->Length = length;
        sqe->OpFlags = SendFlags;
    }

    /// <summary>A vectored send: <paramref name="message"/> (and its iovecs) must stay valid until the completion.</summary>
    public static void PrepareSendMessage(IoUringSqe* sqe, int fd, bool fixedFile, MsgHdr* message, ulong userData)
    {
        Common(sqe, IoUringOpcode.SendMsg, fd, fixedFile, userData);
        sqe->Address = (ulong)message;
        sqe->Length = 1;
        sqe->OpFlags = SendFlags;
    }

    /// <summary>
    /// Zero-copy send: a first CQE carries the result (with F_MORE), a second with F_NOTIF says the kernel no longer
    /// reads the buffer. With <paramref name="reportUsage"/> the notification's res says whether the kernel copied.
    /// </summary>
    public static void PrepareSendZeroCopy(IoUringSqe* sqe, int fd, bool fixedFile, byte* buffer, uint length, ulong userData, bool reportUsage = true, ushort? registeredBufferIndex = null)
    {
        Common(sqe, IoUringOpcode.SendZc, fd, fixedFile, userData);
        sqe->Address = (ulong)buffer;
        sqe->Length = length;
        sqe->OpFlags = SendFlags;
        sqe->IoPrio = reportUsage ? IoPrioFlags.SendZcReportUsage : (ushort)0;
        if (registeredBufferIndex is ushort index)
        {
            sqe->IoPrio |= IoPrioFlags.RecvSendFixedBuffer;
            sqe->BufferIndexOrGroup = index;
        }
    }

    /// <summary>Zero-copy vectored send, with the same two-CQE protocol as <see cref="PrepareSendZeroCopy"/>.</summary>
    public static void PrepareSendMessageZeroCopy(IoUringSqe* sqe, int fd, bool fixedFile, MsgHdr* message, ulong userData, bool reportUsage = true)
    {
        Common(sqe, IoUringOpcode.SendMsgZc, fd, fixedFile, userData);
        sqe->Address = (ulong)message;
        sqe->Length = 1;
        sqe->OpFlags = SendFlags;
        sqe->IoPrio = reportUsage ? IoPrioFlags.SendZcReportUsage : (ushort)0;
    }

    /// <summary>shutdown(2): <paramref name="how"/> is SHUT_RD, SHUT_WR or SHUT_RDWR.</summary>
    public static void PrepareShutdown(IoUringSqe* sqe, int fd, bool fixedFile, int how, ulong userData)
    {
        Common(sqe, IoUringOpcode.Shutdown, fd, fixedFile, userData);
        sqe->Length = (uint)how;
    }

    /// <summary>close(2) of an ordinary descriptor.</summary>
    public static void PrepareClose(IoUringSqe* sqe, int fd, ulong userData)
        => Common(sqe, IoUringOpcode.Close, fd, false, userData);

    /// <summary>Closes a direct descriptor: fd 0, file_index slot+1, and no IOSQE_FIXED_FILE.</summary>
    public static void PrepareCloseDirect(IoUringSqe* sqe, int slot, ulong userData)
    {
        Common(sqe, IoUringOpcode.Close, 0, false, userData);
        sqe->FileIndex = (uint)slot + 1;
    }

    /// <summary>Cancels the request(s) whose user_data is <paramref name="targetUserData"/>.</summary>
    public static void PrepareCancel(IoUringSqe* sqe, ulong targetUserData, ulong userData, bool all = false)
    {
        Common(sqe, IoUringOpcode.AsyncCancel, -1, false, userData);
        sqe->Address = targetUserData;
        sqe->OpFlags = (uint)(all ? CancelFlags.All : CancelFlags.None);
    }

    /// <summary>Cancels every request in the ring, whatever its user_data or descriptor (IORING_ASYNC_CANCEL_ANY).</summary>
    public static void PrepareCancelEverything(IoUringSqe* sqe, ulong userData)
    {
        Common(sqe, IoUringOpcode.AsyncCancel, -1, false, userData);
        sqe->OpFlags = (uint)CancelFlags.Any;
    }

    /// <summary>Cancels every request on <paramref name="fd"/> (a fixed slot when <paramref name="fixedFile"/>).</summary>
    public static void PrepareCancelFd(IoUringSqe* sqe, int fd, bool fixedFile, ulong userData)
    {
        Common(sqe, IoUringOpcode.AsyncCancel, fd, false, userData);
        sqe->OpFlags = (uint)(CancelFlags.Fd | CancelFlags.All | (fixedFile ? CancelFlags.FdFixed : CancelFlags.None));
    }

    /// <summary>A read of the 8-byte counter of an eventfd, the cross-thread wake-up.</summary>
    public static void PrepareEventFdRead(IoUringSqe* sqe, int eventFd, ulong* counter, ulong userData)
    {
        Common(sqe, IoUringOpcode.Read, eventFd, false, userData);
        sqe->Address = (ulong)counter;
        sqe->Length = sizeof(ulong);
        sqe->Offset = ulong.MaxValue; // "current position": an eventfd has none to move
    }

    /// <summary>MSG_RING: posts a CQE with <paramref name="targetUserData"/> and <paramref name="result"/> on another ring.</summary>
    public static void PrepareMessageRing(IoUringSqe* sqe, int targetRingFd, int result, ulong targetUserData, ulong userData)
    {
        Common(sqe, IoUringOpcode.MsgRing, targetRingFd, false, userData);
        sqe->Address = IoUringValues.MsgRingData;
        sqe->Length = (uint)result;
        sqe->Offset = targetUserData;
    }

    /// <summary>A relative timeout that completes with -ETIME after <paramref name="timespec"/> (which must outlive the SQE's submission).</summary>
    public static void PrepareTimeout(IoUringSqe* sqe, KernelTimespec* timespec, ulong userData)
    {
        Common(sqe, IoUringOpcode.Timeout, -1, false, userData);
        sqe->Address = (ulong)timespec;
        sqe->Length = 1;
        sqe->OpFlags = IoUringValues.TimeoutRelative;
    }

    /// <summary>A timeout for the SQE linked before this one (that SQE needs IOSQE_IO_LINK).</summary>
    public static void PrepareLinkTimeout(IoUringSqe* sqe, KernelTimespec* timespec, ulong userData)
    {
        Common(sqe, IoUringOpcode.LinkTimeout, -1, false, userData);
        sqe->Address = (ulong)timespec;
        sqe->Length = 1;
    }

    public static void PrepareNop(IoUringSqe* sqe, ulong userData)
        => Common(sqe, IoUringOpcode.Nop, -1, false, userData);
}
