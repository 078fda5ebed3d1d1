/** A throughput-vs-concurrency line chart as a standalone SVG (no dependencies). */
export interface Series {
  name: string;
  color: string;
  points: Array<{ x: number; y: number }>;
}

export function lineChart(title: string, series: Series[], xLabel: string, yLabel: string): string {
  const W = 760;
  const H = 420;
  const m = { l: 70, r: 215, t: 40, b: 50 };
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const maxY = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p.y)));
  const niceMax = Math.ceil(maxY / 10 ** Math.floor(Math.log10(maxY))) * 10 ** Math.floor(Math.log10(maxY));
  // Concurrency grows geometrically: place x on a log scale, evenly spaced by index.
  const xPos = (x: number) => m.l + (xs.indexOf(x) / Math.max(1, xs.length - 1)) * (W - m.l - m.r);
  const yPos = (y: number) => H - m.b - (y / niceMax) * (H - m.t - m.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W / 2 - m.r / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${title}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const v = (niceMax / 5) * i;
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${yPos(v)}" y2="${yPos(v)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${m.l - 8}" y="${yPos(v) + 4}" text-anchor="end">${Math.round(v).toLocaleString('en-US')}</text>`);
  }
  for (const x of xs) parts.push(`<text x="${xPos(x)}" y="${H - m.b + 18}" text-anchor="middle">${x}</text>`);
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${xLabel}</text>`);
  parts.push(`<text transform="translate(18 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${yLabel}</text>`);
  parts.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`);
  series.forEach((s, i) => {
    const pts = s.points.sort((a, b) => a.x - b.x).map((p) => `${xPos(p.x)},${yPos(p.y)}`);
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2.5" points="${pts.join(' ')}"/>`);
    for (const p of s.points) parts.push(`<circle cx="${xPos(p.x)}" cy="${yPos(p.y)}" r="3.5" fill="${s.color}"/>`);
    const ly = m.t + 10 + i * 22;
    parts.push(`<line x1="${W - m.r + 15}" x2="${W - m.r + 40}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="3"/>`);
    parts.push(`<text x="${W - m.r + 46}" y="${ly + 4}">${s.name}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
