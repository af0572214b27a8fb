using System.IO.Pipelines;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>A reader and a writer that belong together: one end of a connection.</summary>
internal sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
{
    public PipeReader Input { get; } = input;
    public PipeWriter Output { get; } = output;
}
