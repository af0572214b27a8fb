using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>A logger provider that keeps every record, so tests can assert on event ids, names and levels.</summary>
public sealed class TestLogSink : ILoggerProvider
{
    private ConcurrentQueue<LogRecord> _records = new();

    public IReadOnlyCollection<LogRecord> Records => _records;

    internal void CopyFrom(TestLogSink other) => _records = other._records;

    public IEnumerable<LogRecord> ForCategory(string category) => _records.Where(r => r.Category == category);

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose() { }

    public sealed record LogRecord(string Category, LogLevel Level, EventId EventId, string Message, Exception? Exception);

    private sealed class Logger(TestLogSink sink, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => sink._records.Enqueue(new LogRecord(category, logLevel, eventId, formatter(state, exception), exception));
    }
}
