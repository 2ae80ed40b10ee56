import type { Capabilities } from '../protocol/capabilities.js'
import { formatDuration } from '../protocol/duration.js'
import { isOpenStatus, type Injection } from '../protocol/injection.js'
import { describeTarget } from '../protocol/target.js'

const color = (code: number) => (text: string) => (process.stdout.isTTY && !process.env.NO_COLOR ? `\x1b[${code}m${text}\x1b[0m` : text)
export const green = color(32)
export const red = color(31)
export const yellow = color(33)
export const dim = color(2)
export const bold = color(1)

export function statusColor(status: string): string {
  if (status === 'active') return yellow(status)
  if (status === 'recovered') return green(status)
  if (status === 'failed') return red(status)
  return status
}

export function clock(iso: string): string {
  return new Date(iso).toLocaleTimeString('en-GB', { hour12: false })
}

export function relative(iso: string, now = Date.now()): string {
  const delta = new Date(iso).getTime() - now
  const text = formatDuration(Math.abs(Math.round(delta / 1000) * 1000)) || '0s'
  return delta >= 0 ? `in ${text}` : `${text} ago`
}

/** Pads columns to their widest cell; colour codes do not count towards the width. */
export function table(rows: string[][]): string {
  const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '').length
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, visible(cell))))
  return rows
    .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell + ' '.repeat(widths[i]! - visible(cell)))).join('  '))
    .join('\n')
}

export function injectionTable(injections: Injection[]): string {
  if (injections.length === 0) return dim('no injections')
  const rows = [['ID', 'KIND', 'TARGET', 'STATUS', 'WHEN'].map(bold)]
  for (const i of injections) {
    const open = isOpenStatus(i.status)
    const when = open ? `ends ${relative(i.expiresAt)}` : i.recoveredAt ? `ended ${relative(i.recoveredAt)}` : `created ${relative(i.createdAt)}`
    rows.push([i.id, i.kind, describeTarget(i.resolved), statusColor(i.status), when])
  }
  return table(rows)
}

export function injectionDetails(i: Injection): string {
  const lines = [
    `${bold(i.id)}  ${i.kind} on ${describeTarget(i.resolved)}  ${statusColor(i.status)}${i.dryRun ? yellow(' (dry run: nothing was changed)') : ''}`,
    `  fault      ${JSON.stringify(i.fault)}`,
    `  target     ${JSON.stringify(i.target)}`,
    `  duration   ${i.duration}  (created ${clock(i.createdAt)}, ends ${clock(i.expiresAt)})`,
  ]
  if (i.recoveredAt) lines.push(`  recovered  ${clock(i.recoveredAt)}`)
  if (!i.recoverable) lines.push(`  ${yellow('not recoverable')}: the effect cannot be taken back`)
  if (i.error) lines.push(`  ${red('error')}      ${i.error.code}: ${i.error.message}`)
  lines.push('  plan')
  for (const step of i.plan.steps) lines.push(`    ${step.phase.padEnd(8)} ${step.detail}${step.argv ? dim(`  $ ${step.argv.join(' ')}`) : ''}`)
  for (const note of i.notes) lines.push(`  ${dim('note')}       ${note}`)
  return lines.join('\n')
}

export function capabilitiesReport(caps: Capabilities): string {
  const h = caps.host
  const lines = [
    `${bold(h.hostname)}  ${h.distro} ${h.release}, kernel ${h.kernel}, ${h.arch}, ${h.cpuCores} cores, ${(h.memTotalBytes / 2 ** 30).toFixed(1)} GiB  (agent ${h.agentVersion}, pid ${h.agentPid}; probed in ${caps.probeMs} ms)`,
    '',
    bold('Fault kinds'),
  ]
  const kindRows = Object.entries(caps.kinds).map(([name, k]) => [
    k.available ? green('✓') : red('✗'),
    name,
    `targets: ${k.targets.join(', ')}${k.recoverable ? '' : ', not recoverable'}`,
    k.available ? '' : red(k.reason ?? ''),
  ])
  lines.push(table(kindRows))
  if (caps.policy) {
    lines.push('', bold(`Host policy ${dim(caps.policy.file)}`))
    for (const [rule, value] of Object.entries(caps.policy.rules)) lines.push(`  ${rule.padEnd(12)} ${JSON.stringify(value)}`)
  }
  lines.push('', bold('Host features'))
  const featureRows = Object.entries(caps.features).map(([name, f]) => [f.available ? green('✓') : red('✗'), name, f.available ? dim(f.detail) : f.detail])
  lines.push(table(featureRows))
  return lines.join('\n')
}
