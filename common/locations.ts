import { join } from 'node:path'

/**
 * Where the agent and the server keep what their clients need to find them: the agent's socket
 * and the tokens generated at first start. The CLI looks in the same places, so on a host where
 * they run with the defaults nothing has to be configured (root, or a member of the faultline
 * group, just runs `faultline ls`).
 */

export const DEFAULT_AGENT_STATE_DIR = '/var/lib/faultline'
export const DEFAULT_SERVER_STATE_DIR = '/var/lib/faultline-server'

/** The agent's API socket when it runs as root (dockerd and containerd keep theirs in /run too). */
export const DEFAULT_AGENT_SOCKET = '/run/faultline/agent.sock'
/** The group whose members may use the agent's socket (mode 0660 root:faultline) when it exists. */
export const AGENT_GROUP = 'faultline'

/** The agent's socket: /run/faultline/agent.sock for root, else under the state dir (a user cannot write /run). */
export function defaultAgentSocket(stateDir: string, uid = process.getuid?.() ?? 0): string {
  return uid === 0 ? DEFAULT_AGENT_SOCKET : join(stateDir, 'agent.sock')
}

/** The bearer token of an agent listening on TCP, generated at its first start unless --token-file names one. */
export const agentTokenFile = (stateDir: string) => join(stateDir, 'agent.token')
/** The server's admin token and agents' enrolment token, generated at its first start unless configured. */
export const adminTokenFile = (stateDir: string) => join(stateDir, 'admin.token')
export const enrolTokenFile = (stateDir: string) => join(stateDir, 'enrol.token')
