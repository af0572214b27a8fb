using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>The descriptor budget's count of open descriptors: every entry of /proc/self/fd, read without a stat each.</summary>
[Collection(Semantics.MachineWideCollection.Name)] // counts the whole process's descriptors: nothing else may run meanwhile
public sealed class DescriptorCountTests
{
    [Fact]
    public void CountsWhatIsOpenAndFollowsNewDescriptors()
    {
        const int Extra = 40;
        long before = DescriptorBudget.CountOpenDescriptors();
        var sockets = Enumerable.Range(0, Extra).Select(_ => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)).ToList();
        try
        {
            long during = DescriptorBudget.CountOpenDescriptors();
            long managed = Directory.EnumerateFileSystemEntries("/proc/self/fd").Count();
            // The runtime may open a descriptor or two of its own meanwhile (assembly loads): a little drift either way.
            Assert.InRange(during - before, Extra - 8, Extra + 8);
            Assert.InRange(during, managed - 8, managed + 8);
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
        }
    }
}
