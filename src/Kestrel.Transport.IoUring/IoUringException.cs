using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring;

/// <summary>An io_uring or libc call failed; the message names the call and the errno.</summary>
public sealed class IoUringException : Exception
{
    internal IoUringException(string operation, int errno)
        : base($"{operation} failed: {Errno.Name(errno)}")
    {
        Operation = operation;
        ErrorCode = Math.Abs(errno);
    }

    internal IoUringException(string message) : base(message)
    {
        Operation = message;
    }

    /// <summary>The call that failed, e.g. "io_uring_setup".</summary>
    public string Operation { get; }

    /// <summary>The positive errno value, or 0 when the failure was not an errno.</summary>
    public int ErrorCode { get; }

    /// <summary>The errno's symbolic name, e.g. "EPERM".</summary>
    public string ErrorName => Errno.Name(ErrorCode);
}
