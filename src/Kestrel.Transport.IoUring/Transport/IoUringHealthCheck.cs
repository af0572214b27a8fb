using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Reports which transport serves: Healthy over io_uring, Degraded with the reason when the app fell back to Sockets
/// or when a ring failed (Unhealthy when every ring did), so an operator learns it from the health endpoint rather
/// than from a log line.
/// </summary>
internal sealed class IoUringHealthCheck(IoUringTransportFactory factory) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        HealthCheckResult result;
        if (factory.IsUsingIoUring)
        {
            int failed = factory.Rings.Count(r => r.State == RingState.Failed);
            var data = new Dictionary<string, object> { ["transport"] = "io_uring", ["rings"] = factory.RingCount, ["failedRings"] = failed };
            if (failed == 0)
            {
                result = HealthCheckResult.Healthy($"serving over io_uring with {factory.RingCount} ring(s)", data);
            }
            else
            {
                // A failed ring reset its connections and takes no new ones: the others serve on, at less capacity.
                // With none left, nothing accepts any more.
                var status = failed == factory.RingCount ? HealthStatus.Unhealthy : context.Registration.FailureStatus;
                result = new HealthCheckResult(status,
                    $"{failed} of {factory.RingCount} io_uring ring(s) failed and stopped (see the Critical RingFailed log line); {factory.RingCount - failed} serve on",
                    data: data);
            }
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
