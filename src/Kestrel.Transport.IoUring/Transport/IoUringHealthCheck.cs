using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Reports which transport serves: Healthy over io_uring, Degraded with the reason when the app fell back to Sockets,
/// so an operator learns it from the health endpoint rather than from a log line.
/// </summary>
internal sealed class IoUringHealthCheck(IoUringTransportFactory factory) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        HealthCheckResult result;
        if (factory.IsUsingIoUring)
        {
            result = HealthCheckResult.Healthy($"serving over io_uring with {factory.RingCount} ring(s)",
                new Dictionary<string, object> { ["transport"] = "io_uring", ["rings"] = factory.RingCount });
        }
        else if (factory.FallbackReason is { } reason)
        {
            result = new HealthCheckResult(context.Registration.FailureStatus,
                $"serving with the Sockets transport because io_uring is unavailable: {reason}",
                data: new Dictionary<string, object> { ["transport"] = "sockets", ["reason"] = reason });
        }
        else
        {
            result = HealthCheckResult.Healthy("the transport has not bound an endpoint yet",
                new Dictionary<string, object> { ["transport"] = "none" });
        }
        return Task.FromResult(result);
    }
}
