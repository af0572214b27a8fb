using Kestrel.Transport.IoUring.Tests.Protocols;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>Bytes that arrived but are not the bytes sent: never acceptable, whatever faults were injected.</summary>
internal sealed class CorruptionException(string message) : Exception(message);

/// <summary>A response (or echo) that ended in a way its plan does not allow, e.g. a wrong status.</summary>
internal sealed class UnexpectedResponseException(string message) : Exception(message);

/// <summary>Checks a stream of received bytes against the <see cref="PatternData"/> stream it must equal, piece by piece.</summary>
internal sealed class PatternVerifier(ulong seed, long expectedLength, string what)
{
    private readonly byte[] _expected = new byte[64 * 1024];

    public long Received { get; private set; }

    public void Append(ReadOnlySpan<byte> data)
    {
        if (Received + data.Length > expectedLength)
        {
            throw new CorruptionException($"{what}: {Received + data.Length} bytes arrived, {expectedLength} were sent");
        }
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, _expected.Length);
            PatternData.Fill(_expected.AsSpan(0, n), Received, seed);
            int mismatch = data[..n].CommonPrefixLength(_expected.AsSpan(0, n));
            if (mismatch < n)
            {
                throw new CorruptionException($"{what}: byte {Received + mismatch} differs (got {data[mismatch]}, sent {_expected[mismatch]})");
            }
            Received += n;
            data = data[n..];
        }
    }

    public void EnsureComplete()
    {
        if (Received != expectedLength)
        {
            throw new EndOfStreamException($"{what}: {Received} of {expectedLength} bytes arrived");
        }
    }
}
